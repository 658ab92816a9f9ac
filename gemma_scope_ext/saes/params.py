"""The arrays of a JumpReLU SAE or transcoder: names, shapes, and the embedding-site rescaling."""

from __future__ import annotations

from torch import Tensor

__all__ = ["PARAM_NAMES", "jumprelu_widths", "rescale_for_hook_embed"]

PARAM_NAMES = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")
"""The arrays of a JumpReLU SAE or transcoder, and of every Gemma Scope params.npz."""


def jumprelu_widths(params: dict[str, Tensor]) -> tuple[int, int, int]:
    """``(d_in, d_sae, d_out)`` of a JumpReLU SAE's or transcoder's arrays, checked for consistency."""
    if set(params) != set(PARAM_NAMES):
        raise ValueError(
            f"JumpReLU params must hold exactly {sorted(PARAM_NAMES)}, got {sorted(params)}"
        )
    d_in, d_sae = params["W_enc"].shape
    d_out = params["W_dec"].shape[-1]
    shapes = {"W_dec": (d_sae, d_out), "b_enc": (d_sae,), "b_dec": (d_out,),
              "threshold": (d_sae,)}  # fmt: skip
    for name, shape in shapes.items():
        if tuple(params[name].shape) != shape:
            raise ValueError(
                f"{name} has shape {tuple(params[name].shape)}, expected {shape} for W_enc "
                f"{(d_in, d_sae)} and W_dec {tuple(params['W_dec'].shape)}"
            )
    return d_in, d_sae, d_out


def rescale_for_hook_embed(params: dict[str, Tensor], scale: float) -> dict[str, Tensor]:
    """Weights for inputs ``scale`` times larger: x_hat(scale * e) = scale * x_hat(e).

    TransformerLens's ``hook_embed`` multiplies Gemma's embeddings by ``scale = sqrt(d_model)``;
    Gemma Scope's embedding SAEs saw them unscaled. ``W_enc / s``, ``W_dec * s`` and ``b_dec * s``
    (SAELens 6.54 forgets ``b_dec``); ``b_enc`` and the thresholds are unchanged.
    """
    return {**params, "W_enc": params["W_enc"] / scale, "W_dec": params["W_dec"] * scale,
            "b_dec": params["b_dec"] * scale}  # fmt: skip
