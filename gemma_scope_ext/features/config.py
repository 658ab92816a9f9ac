"""What a feature-collection pass records per latent, and how much of it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["FeatureConfig"]

MAX_TOKENS = 2**32
"""Tokens one pass can index: ranking keys pack a token's stream index into 32 bits."""


@dataclass(frozen=True)
class FeatureConfig:
    """Per-latent records of one streaming pass; every size is per latent, none grows with tokens."""

    top_k: int = 16
    """Top activating contexts kept (exact: the k largest activations over the whole stream)."""

    n_quantiles: int = 4
    """Equal-mass bins of a latent's non-zero activations that examples are drawn from."""

    per_quantile: int = 4
    """Examples shown per quantile bin."""

    oversample: int = 2
    """The uniform reservoir holds ``oversample * n_quantiles * per_quantile`` firings, so that
    each equal-mass bin expects ``oversample * per_quantile`` of them and rarely has too few."""

    context_before: int = 10
    """Tokens kept before the activating token (within its row)."""

    context_after: int = 3
    """Tokens kept after the activating token (within its row)."""

    n_bins: int = 64
    """Histogram bins over [0, 2^e), e the smallest integer with 2^e above the latent's maximum;
    must be a power of two so bin edges stay exact when the range doubles."""

    n_logits: int = 10
    """Promoted and suppressed tokens listed per latent (output-side view)."""

    seed: int = 0
    """Seed of the reservoir's ranking keys; the same seed and tokens give the same examples."""

    def __post_init__(self) -> None:
        counts = {"top_k": self.top_k, "n_quantiles": self.n_quantiles,
                  "per_quantile": self.per_quantile, "oversample": self.oversample,
                  "n_bins": self.n_bins}  # fmt: skip
        bad = {k: v for k, v in counts.items() if isinstance(v, bool) or not isinstance(v, int)
               or v < 1}  # fmt: skip
        if bad:
            raise ValueError(f"FeatureConfig: {bad} must be integers >= 1")
        if self.n_bins & (self.n_bins - 1):
            raise ValueError(f"n_bins must be a power of two (e.g. 64), got {self.n_bins}")
        if self.n_bins < self.n_quantiles:
            raise ValueError(f"n_bins ({self.n_bins}) must be >= n_quantiles ({self.n_quantiles})")
        if min(self.context_before, self.context_after, self.n_logits) < 0:
            raise ValueError("context_before, context_after and n_logits must be >= 0")
        if not 0 <= self.seed < 2**31:
            raise ValueError(f"seed must be in [0, 2^31), got {self.seed}")

    @property
    def window(self) -> int:
        """Tokens in a context window: before, the activating token, after."""
        return self.context_before + 1 + self.context_after

    @property
    def reservoir(self) -> int:
        """Firings held in the uniform reservoir the quantile examples come from."""
        return self.oversample * self.n_quantiles * self.per_quantile

    def to_dict(self) -> dict[str, Any]:
        """The fields, for JSON."""
        return asdict(self)
