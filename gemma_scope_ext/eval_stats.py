"""Float64 running sums behind the evaluation metrics, overall and by sequence position."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["PositionProfile", "RunningStats"]


@dataclass(frozen=True)
class PositionProfile:
    """Metrics by sequence position (index = position in the row; NaN where nothing was counted).

    Weighting each position by its count gives back the overall numbers exactly: FVU at a position
    is its mean squared error over the overall variance, so the positions share out the total.
    """

    n_tokens: Int[Tensor, " pos"]
    """Non-special tokens at each position (weights for ``fvu`` and ``l0``)."""
    fvu: Float[Tensor, " pos"]
    """Mean ||x - x_hat||^2 at the position divided by the overall variance per token."""
    l0: Float[Tensor, " pos"]
    """Mean number of active latents at the position."""
    n_loss_tokens: Int[Tensor, " pos"]
    """Next-token predictions counted at each position (weights for the losses)."""
    clean_loss: Float[Tensor, " pos"]
    """Clean cross-entropy of the prediction made at the position."""
    delta_loss: Float[Tensor, " pos"]
    """Spliced minus clean cross-entropy at the position."""

    def to_dict(self) -> dict[str, list]:
        """Plain lists (NaN becomes None) for JSON."""
        return {k: [None if v != v else v for v in getattr(self, k).tolist()]
                for k in ("n_tokens", "fvu", "l0", "n_loss_tokens", "clean_loss", "delta_loss")}


class RunningStats:
    """Float64 sums for one SAE over a stream of batches."""

    def __init__(self, d_sae: int) -> None:
        self.n_tokens = self.n_loss_tokens = 0
        self.clean = self.spliced = self.zero = self.mean = self.sq_err = self.sq_sum = 0.0
        self.x_sum: Tensor | None = None
        self.l0_hist = torch.zeros(d_sae + 1, dtype=torch.long)
        self.fires = torch.zeros(d_sae, dtype=torch.long)
        # rows: tokens, squared error, l0, loss tokens, clean loss, delta loss; one column per position
        self.pos = torch.zeros(6, 0, dtype=torch.float64)

    def add(self, keep, target, recon, feats, clean, spliced, zero=None, mean=None) -> None:
        """One batch: ``keep`` [b, p] marks non-special tokens, losses are [b, p - 1]."""
        kf, kl = keep.double(), keep[:, :-1].double()
        t = target.double()
        err = (t - recon.to(t.device).double()).pow(2).sum(-1)  # [b, p]
        active = feats != 0
        kd = keep.to(active.device)  # the SAE may sit on another device than the model
        l0 = active.sum(-1).to(kf.device)  # [b, p]
        self.n_tokens += int(keep.sum())
        self.n_loss_tokens += int(kl.sum())
        self.sq_err += float((err * kf).sum())
        self.sq_sum += float((t.pow(2).sum(-1) * kf).sum())
        x_sum = t[keep].sum(0).cpu()
        self.x_sum = x_sum if self.x_sum is None else self.x_sum + x_sum
        clean, spliced = clean.double(), spliced.double()
        self.clean += float((clean * kl).sum())
        self.spliced += float((spliced * kl).sum())
        if zero is not None:
            self.zero += float((zero.double() * kl).sum())
            self.mean += float((mean.double() * kl).sum())
        self.l0_hist += torch.bincount(l0[keep].cpu(), minlength=self.l0_hist.numel())
        self.fires += active[kd].sum(0).cpu()
        pad = (0, 1)
        rows = torch.stack([
            kf.sum(0), (err * kf).sum(0), (l0 * kf).sum(0), F.pad(kl.sum(0), pad),
            F.pad((clean * kl).sum(0), pad), F.pad(((spliced - clean) * kl).sum(0), pad),
        ]).cpu()  # fmt: skip
        if rows.shape[1] > self.pos.shape[1]:
            self.pos = F.pad(self.pos, (0, rows.shape[1] - self.pos.shape[1]))
        self.pos[:, : rows.shape[1]] += rows

    def variance(self) -> float:
        """Total variance per token, E||x||^2 - ||E x||^2, summed over dimensions."""
        mean = self.x_sum / self.n_tokens
        return self.sq_sum / self.n_tokens - float(mean.pow(2).sum())

    def fvu(self) -> float:
        """Pooled squared error over pooled variance (1.0 for a constant input and exact output 0)."""
        var = self.variance()
        if var <= 1e-12:
            return 0.0 if self.sq_err / self.n_tokens <= 1e-12 else float("inf")
        return self.sq_err / self.n_tokens / var

    def profile(self) -> PositionProfile:
        """Per-position means; the variance is the overall one."""
        n, err, l0, nl, clean, delta = self.pos
        var = max(self.variance(), 1e-30)
        with torch.no_grad():
            return PositionProfile(
                n_tokens=n.long(), fvu=err / n / var, l0=l0 / n,
                n_loss_tokens=nl.long(), clean_loss=clean / nl, delta_loss=delta / nl,
            )  # fmt: skip

