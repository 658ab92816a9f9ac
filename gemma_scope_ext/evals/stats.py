"""Evaluation results, and the float64 running sums behind them, overall and by position."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["EvalResult", "PositionProfile", "RunningStats"]


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


@dataclass(frozen=True)
class EvalResult:
    """One SAE (or transcoder) evaluated on one model and token set. Losses are nats per token."""

    hook_name: str
    """Hook the SAE reads."""
    hook_name_out: str
    """Hook its output replaces (differs from ``hook_name`` only for transcoders)."""
    n_tokens: int
    """Non-special tokens whose activations entered FVU, L0 and latent statistics."""
    n_loss_tokens: int
    """Next-token predictions that entered the losses (non-special tokens but the last of a row)."""
    clean_loss: float
    """Cross-entropy of the unmodified model."""
    spliced_loss: float
    """Cross-entropy with the SAE's output in place of the activation at ``hook_name_out``."""
    zero_ablation_loss: float | None
    """Cross-entropy with the site set to zero (None when ablations were not asked for)."""
    mean_ablation_loss: float | None
    """Cross-entropy with the site set to its mean over the evaluated tokens (or None)."""
    fvu: float
    """Fraction of variance unexplained: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over tokens."""
    mse: float
    """Mean over tokens of ||x - x_hat||^2 (summed over dimensions)."""
    l0: float
    """Mean number of active latents per token."""
    l0_histogram: Int[Tensor, " d_sae_plus_1"]
    """Tokens with exactly k active latents, for k = 0..d_sae."""
    latent_frequency: Float[Tensor, " d_sae"]
    """Fraction of tokens on which each latent is active."""
    dense_threshold: float
    """A latent active on more than this fraction of tokens counts as dense."""
    by_position: PositionProfile
    """The same metrics by sequence position."""

    @property
    def delta_loss(self) -> float:
        """Spliced minus clean cross-entropy: the Gemma Scope report's delta LM loss."""
        return self.spliced_loss - self.clean_loss

    @property
    def explained_variance(self) -> float:
        """1 - FVU."""
        return 1.0 - self.fvu

    @property
    def frac_dead(self) -> float:
        """Fraction of latents never active on the evaluated tokens."""
        return float((self.latent_frequency == 0).double().mean())

    @property
    def frac_dense(self) -> float:
        """Fraction of latents active on more than ``dense_threshold`` of the tokens."""
        return float((self.latent_frequency > self.dense_threshold).double().mean())

    @property
    def loss_recovered(self) -> float | None:
        """(zero-ablation - spliced) / (zero-ablation - clean): SAELens's ``ce_loss_score``."""
        if self.zero_ablation_loss is None:
            return None
        return (self.zero_ablation_loss - self.spliced_loss) / (
            self.zero_ablation_loss - self.clean_loss
        )

    def l0_quantiles(self, qs: Sequence[float] = (0.1, 0.25, 0.5, 0.75, 0.9)) -> list[int]:
        """L0 values below which the given fractions of tokens fall (from the histogram)."""
        cdf = self.l0_histogram.double().cumsum(0) / max(self.n_tokens, 1)
        return [int(torch.searchsorted(cdf, torch.tensor(q, dtype=torch.float64))) for q in qs]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (the full latent frequencies are left out; L0 is summarised)."""
        hist = self.l0_histogram
        last = int(hist.nonzero().max()) + 1 if hist.any() else 1
        return {
            "hook_name": self.hook_name, "hook_name_out": self.hook_name_out,
            "d_sae": int(self.latent_frequency.numel()),
            "n_tokens": self.n_tokens, "n_loss_tokens": self.n_loss_tokens,
            "clean_loss": self.clean_loss, "spliced_loss": self.spliced_loss,
            "delta_loss": self.delta_loss, "zero_ablation_loss": self.zero_ablation_loss,
            "mean_ablation_loss": self.mean_ablation_loss, "loss_recovered": self.loss_recovered,
            "fvu": self.fvu, "explained_variance": self.explained_variance, "mse": self.mse,
            "l0": self.l0, "l0_quantiles": dict(zip(["p10", "p25", "p50", "p75", "p90"],
                                                    self.l0_quantiles(), strict=True)),
            "l0_histogram": hist[:last].tolist(),
            "frac_dead": self.frac_dead, "frac_dense": self.frac_dense,
            "dense_threshold": self.dense_threshold,
            "by_position": self.by_position.to_dict(),
        }  # fmt: skip
