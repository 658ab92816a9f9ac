"""Per-latent activation histograms over a range that doubles as larger activations arrive.

Latent ``l`` keeps ``n_bins`` equal bins over [0, 2^e_l), e_l the smallest integer with every
activation seen below 2^e_l. A value's bin is ``floor(v * n_bins / 2^e_l)``: scaling by a power of
two is exact in floating point, so the bin is exactly the one whose edges ``i * 2^e_l / n_bins``
hold it. When a larger value arrives the range doubles ``s`` times and each new bin is the sum of
``2^s`` old ones, which is again exact (``floor(floor(x) / 2^s) = floor(x / 2^s)``), so the final
counts equal a histogram of all activations made with the final edges.

Equal-mass quantile bins are read off the counts at bin edges, so the mass between two quantile
edges is known exactly, not estimated.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["DoublingHistogram", "bin_of", "quantile_edges"]


def bin_of(value: Tensor, exponent: Tensor, n_bins: int) -> Tensor:
    """Bin index of each ``value`` in ``n_bins`` bins over [0, 2^exponent)."""
    shift = int(math.log2(n_bins)) - exponent.to(torch.int32)
    b = torch.floor(torch.ldexp(value.float(), shift.float())).long()
    return b.clamp_(0, n_bins - 1)


class DoublingHistogram:
    """Counts of non-zero activations per latent in ``n_bins`` bins over [0, 2^exponent)."""

    def __init__(self, d_sae: int, n_bins: int, device: torch.device | str) -> None:
        self.n_bins = n_bins
        self.counts = torch.zeros(d_sae, n_bins, dtype=torch.int64, device=device)
        self.exponent = torch.full((d_sae,), torch.iinfo(torch.int32).min, dtype=torch.int32,
                                   device=device)  # fmt: skip
        """2^exponent bounds the range; int32 min until the latent first fires."""

    def add(self, latent: Int[Tensor, " n"], value: Float[Tensor, " n"]) -> None:
        """Count firings ``value`` (> 0) of ``latent``."""
        if latent.numel() == 0:
            return
        peak = torch.zeros(self.counts.shape[0], device=value.device)
        peak.scatter_reduce_(0, latent, value.float(), reduce="amax")
        _, e = torch.frexp(peak)  # peak = m * 2^e, 0.5 <= m < 1: every value is below 2^e
        e = e.to(torch.int32)
        grow = (peak > 0) & (e > self.exponent)
        if bool(grow.any()):
            self._grow(grow.nonzero().squeeze(1), e[grow])
        index = latent * self.n_bins + bin_of(value, self.exponent[latent], self.n_bins)
        self.counts.view(-1).index_add_(0, index, torch.ones_like(index))

    def _grow(self, latents: Tensor, exponent: Tensor) -> None:
        unset = self.exponent[latents] == torch.iinfo(torch.int32).min
        shift = torch.where(unset, 0, exponent - self.exponent[latents])
        for s in torch.unique(shift).tolist():
            if s == 0:
                continue
            rows = latents[shift == s]
            old = self.counts[rows]
            merged = torch.zeros_like(old)
            if 2**s >= self.n_bins:
                merged[:, 0] = old.sum(1)
            else:
                kept = self.n_bins >> s
                merged[:, :kept] = old.view(len(rows), kept, 2**s).sum(-1)
            self.counts[rows] = merged
        self.exponent[latents] = exponent


def quantile_edges(counts: Int[Tensor, "d_sae n_bins"], n_quantiles: int) -> Int[Tensor, "d_sae q"]:
    """Histogram-bin edges of ``n_quantiles`` equal-mass bins per latent, shape [d_sae, q + 1].

    Edge ``q`` is the first bin edge with at least ``q / n_quantiles`` of the mass below it; the
    last edge is one past the highest non-empty bin. A bin that one histogram bin's mass spans
    entirely comes out empty (two equal edges).
    """
    d, n_bins = counts.shape
    cum = torch.cat([counts.new_zeros(d, 1), counts.cumsum(1)], dim=1)  # mass below each edge
    total = cum[:, -1:]
    q = torch.arange(n_quantiles + 1, device=counts.device)
    # first j with cum[j] * n_q >= q * total (integers: no rounding)
    edges = torch.searchsorted((cum * n_quantiles).contiguous(), (q[None, :] * total).contiguous())
    top = torch.where(counts > 0, torch.arange(1, n_bins + 1, device=counts.device), 0).amax(1)
    edges[:, -1] = top
    return torch.minimum(edges, top[:, None])
