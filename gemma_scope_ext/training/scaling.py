"""The recipe's scalar normalisation: inputs and targets scaled so that E[||x||^2] = 1."""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["unit_norm_scale"]


def unit_norm_scale(x: Tensor) -> float:
    """The scalar s with E[||s x||^2] = 1 over the batch's rows (the recipe's input scaling)."""
    mean_sq = x.detach().reshape(-1, x.shape[-1]).double().pow(2).sum(-1).mean().item()
    if not math.isfinite(mean_sq) or mean_sq <= 0:
        raise ValueError(
            f"cannot scale inputs to unit mean squared norm: the batch's E[||x||^2] is {mean_sq}; "
            "expected a positive finite value (is the hook producing zeros or NaNs?)"
        )
    return mean_sq**-0.5
