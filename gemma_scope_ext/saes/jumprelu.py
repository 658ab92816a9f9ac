"""JumpReLU and its step gate with Gemma Scope's straight-through estimators.

JumpReLU_theta(z) = z * H(z - theta). Both the gate H and the JumpReLU are piecewise constant in
theta, so their true gradient with respect to the threshold is zero almost everywhere. Gemma Scope
(following the JumpReLU paper) replaces it with a kernel density estimate using a rectangle kernel
K(u) = 1[|u| < 1/2] of bandwidth eps:

    d H(z - theta) / d theta       = -(1 / eps)     * K((z - theta) / eps)
    d JumpReLU_theta(z) / d theta  = -(theta / eps) * K((z - theta) / eps)

The gate passes no pseudo-gradient to z; through JumpReLU, z receives the exact H(z - theta).
The bandwidth is a plain Python float: it is a hyperparameter, never trained.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["JumpReLU", "Step", "jumprelu", "rectangle", "step"]


def rectangle(x: Tensor) -> Tensor:
    """The rectangle kernel K(x) = 1 where |x| < 1/2, else 0, in the dtype of ``x``."""
    return ((x > -0.5) & (x < 0.5)).to(x.dtype)


def _sum_to_shape(grad: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient back to the shape of the tensor it came from (the threshold)."""
    extra = grad.dim() - len(shape)
    if extra > 0:
        grad = grad.sum(dim=tuple(range(extra)))
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(dim=dims, keepdim=True) if dims else grad


class _ThresholdSTE(torch.autograd.Function):
    """Shared by both estimators: backward needs z, the threshold and the bandwidth."""

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, float], output: Tensor) -> None:
        z, threshold, bandwidth = inputs
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth


class Step(_ThresholdSTE):
    """H(z - theta), with the rectangle-kernel pseudo-gradient for theta and none for z."""

    @staticmethod
    def forward(z: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:  # noqa: ARG004
        return (z > threshold).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[None, Tensor, None]:  # type: ignore[override]
        z, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_threshold = -(1.0 / eps) * rectangle((z - threshold) / eps) * grad_output
        return None, _sum_to_shape(grad_threshold, threshold.shape), None


class JumpReLU(_ThresholdSTE):
    """z * H(z - theta): the exact gradient H(z - theta) for z, the kernel estimate for theta."""

    @staticmethod
    def forward(z: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:  # noqa: ARG004
        return z * (z > threshold).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        z, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_z = (z > threshold).to(grad_output.dtype) * grad_output
        grad_threshold = -(threshold / eps) * rectangle((z - threshold) / eps) * grad_output
        return grad_z, _sum_to_shape(grad_threshold, threshold.shape), None


def _check_bandwidth(bandwidth: float) -> float:
    if isinstance(bandwidth, Tensor) or not bandwidth > 0:
        raise ValueError(
            f"bandwidth must be a positive Python float, got {bandwidth!r}; "
            "Gemma Scope trained with 0.001"
        )
    return float(bandwidth)


def step(
    z: Float[Tensor, "... d_sae"], threshold: Float[Tensor, " d_sae"], bandwidth: float
) -> Float[Tensor, "... d_sae"]:
    """H(z - threshold) in {0, 1}; backward gives the threshold -(1/eps) K((z - theta)/eps)."""
    return Step.apply(z, threshold, _check_bandwidth(bandwidth))  # type: ignore[no-any-return]


def jumprelu(
    z: Float[Tensor, "... d_sae"], threshold: Float[Tensor, " d_sae"], bandwidth: float
) -> Float[Tensor, "... d_sae"]:
    """z * H(z - threshold); backward gives the threshold -(theta/eps) K((z - theta)/eps)."""
    return JumpReLU.apply(z, threshold, _check_bandwidth(bandwidth))  # type: ignore[no-any-return]
