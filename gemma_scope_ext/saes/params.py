"""The arrays of a JumpReLU SAE or transcoder: names, shapes, and the embedding-site rescaling."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "PARAM_NAMES",
    "check_finite",
    "check_last_dim",
    "jumprelu_widths",
    "rescale_for_hook_embed",
]

PARAM_NAMES = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")
"""The arrays of a JumpReLU SAE or transcoder, and of every Gemma Scope params.npz."""


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def jumprelu_widths(params: dict[str, Tensor]) -> tuple[int, int, int]:
    """``(d_in, d_sae, d_out)`` of a JumpReLU SAE's or transcoder's arrays, checked for consistency.

    The width d_sae comes from the 1-d ``threshold``, so a transposed matrix is named as the
    culprit rather than the array that was checked against it.
    """
    if set(params) != set(PARAM_NAMES):
        raise ValueError(
            f"JumpReLU params must hold exactly {sorted(PARAM_NAMES)}, got {sorted(params)}"
        )
    for name in ("threshold", "b_enc", "b_dec"):
        if len(_shape(params[name])) != 1:
            raise ValueError(f"{name} must be 1-d, got shape {_shape(params[name])}")
    for name in ("W_enc", "W_dec"):
        if len(_shape(params[name])) != 2:
            raise ValueError(f"{name} must be 2-d, got shape {_shape(params[name])}")
    (d_sae,) = _shape(params["threshold"])
    # A transposed matrix still tells its other width: d_in from W_enc, d_out from W_dec.
    rows, cols = _shape(params["W_enc"])
    d_in = cols if rows == d_sae and cols != d_sae else rows
    rows, cols = _shape(params["W_dec"])
    d_out = rows if cols == d_sae and rows != d_sae else cols
    expected = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_out), "b_enc": (d_sae,),
                "b_dec": (d_out,)}
    for name, shape in expected.items():
        got = _shape(params[name])
        if got == shape:
            continue
        hint = " (it looks transposed)" if got == shape[::-1] else ""
        raise ValueError(
            f"{name} has shape {got}, expected {shape}{hint}: W_enc is [d_in, d_sae], W_dec "
            f"[d_sae, d_out], and here d_in={d_in}, d_sae={d_sae} (threshold), d_out={d_out}"
        )
    return d_in, d_sae, d_out


def check_last_dim(x: Tensor, width: int, what: str, sae: object) -> None:
    """Raise a ValueError naming the SAE's hook unless ``x``'s last dimension is ``width``."""
    if x.shape[-1:] != (width,):
        meta = getattr(getattr(sae, "cfg", None), "metadata", None)
        hook = getattr(meta, "hook_name", None)
        raise ValueError(
            f"{type(sae).__name__}{f' at {hook!r}' if hook else ''} expects {what} of width "
            f"{width} in the last dimension, got shape {tuple(x.shape)}; is this the hook and "
            "model the SAE was trained on?"
        )


def check_finite(params: dict[str, Tensor], where: str) -> None:
    """Raise unless every array is finite and every threshold is >= 0.

    A NaN or infinite weight turns every activation it touches into NaN; a negative threshold gates
    differently in SAELens's stock encoder (ReLU before the gate) than in Gemma Scope's definition.
    Released weights have neither, so either means a damaged or mis-built file.
    """
    for name, value in params.items():
        bad = ~torch.isfinite(torch.as_tensor(value))
        if bad.any():
            raise ValueError(
                f"{where}: {name} holds {int(bad.sum())} NaN or infinite values (first at flat "
                f"index {int(bad.flatten().nonzero()[0])}); the weights are damaged: rebuild or "
                "download them again"
            )
    threshold = torch.as_tensor(params["threshold"])
    if (threshold < 0).any():
        raise ValueError(
            f"{where}: {int((threshold < 0).sum())} thresholds are negative (min "
            f"{float(threshold.min()):.4g}); JumpReLU thresholds must be >= 0"
        )


def rescale_for_hook_embed(params: dict[str, Tensor], scale: float) -> dict[str, Tensor]:
    """Weights for inputs ``scale`` times larger: x_hat(scale * e) = scale * x_hat(e).

    TransformerLens's ``hook_embed`` multiplies Gemma's embeddings by ``scale = sqrt(d_model)``;
    Gemma Scope's embedding SAEs saw them unscaled. ``W_enc / s``, ``W_dec * s`` and ``b_dec * s``
    (SAELens 6.54 forgets ``b_dec``); ``b_enc`` and the thresholds are unchanged.
    """
    return {**params, "W_enc": params["W_enc"] / scale, "W_dec": params["W_dec"] * scale,
            "b_dec": params["b_dec"] * scale}  # fmt: skip
