"""The L0 penalties a JumpReLU SAE can train with: Gemma Scope's and Gemma Scope 2's.

Both act on each token's L0 as the step estimator counts it, ``l0 = sum_i H(z_i - theta_i)``
(its threshold gradient is the rectangle kernel's, see ``saes/jumprelu.py``), and are averaged over
tokens before lambda multiplies them:

* ``"step"`` (Gemma Scope): the L0 itself, ``l0``;
* ``"quadratic"`` (Gemma Scope 2, as SAELens 6.54 implements it): ``(2 / L*) (l0 - L*)^2`` around a
  target L0 ``L*``. It is zero at the target and pushes from both sides, so lambda sets how tightly
  the L0 is held there rather than where it ends up; at ``l0 = 2 L*`` it equals the step penalty
  (``2 L*``), and its slope there is ``4``.

What the public sources do not settle about Gemma Scope 2's recipe: whether the square is taken per
token (as here and in SAELens) or of the batch's mean L0, the lambda and target per release (the
folders' L0 labels give the targets' scale only: small 10-20, medium 30-60, big 60-150), and the
frequency penalty and Matryoshka losses DeepMind mentions, whose definitions are not published.
"""

from __future__ import annotations

from typing import Literal

from jaxtyping import Float
from torch import Tensor

__all__ = ["L0_PENALTIES", "sparsity_penalty"]

L0_PENALTIES = ("step", "quadratic")
"""The accepted values of ``l0_penalty``."""


def sparsity_penalty(
    l0: Float[Tensor, " tokens"],
    mode: Literal["step", "quadratic"] = "step",
    target_l0: float | None = None,
) -> Float[Tensor, ""]:
    """The mean over tokens of the penalty on each token's L0 (before lambda)."""
    if mode == "step":
        return l0.mean()
    if mode == "quadratic":
        if target_l0 is None or not target_l0 > 0:
            raise ValueError(
                f"the quadratic L0 penalty needs a target_l0 > 0, got {target_l0!r}; set the "
                "training config's target_l0 (e.g. 60 for Gemma Scope 2's 'medium')"
            )
        return (2.0 / target_l0 * (l0 - target_l0).pow(2)).mean()
    raise ValueError(f"unknown l0_penalty {mode!r}; expected one of: {', '.join(L0_PENALTIES)}")
