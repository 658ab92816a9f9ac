"""Gemma Scope 2's JumpReLU skip transcoder for inference: a transcoder plus an affine skip path.

    f = JumpReLU_theta(x W_enc + b_enc),    y_hat = f W_dec + b_dec + x W_skip^T.

``W_skip`` is [d_out, d_in], as in SAELens's ``JumpReLUSkipTranscoder`` (Gemma Scope 2's files store
its transpose, ``affine_skip_connection`` [d_in, d_out]); the parameters, names and shapes are that
class's, so a saved skip transcoder is a stock ``jumprelu_skip_transcoder`` folder apart from the
architecture name, and the training class saves the stock name itself. ``forward`` and
``forward_with_activations`` add the skip term; ``decode`` is the sparse part alone, as in SAELens, so
the latents' contributions are ``decode``'s and the skip term is ``skip(x)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn
from typing_extensions import override

from gemma_scope_ext.saes.params import check_last_dim, jumprelu_widths
from gemma_scope_ext.saes.transcoder import GemmaScopeTranscoder, GemmaScopeTranscoderConfig

__all__ = ["ARCHITECTURE", "GemmaScopeSkipTranscoder", "GemmaScopeSkipTranscoderConfig"]

ARCHITECTURE = "gemma_scope_jumprelu_skip_transcoder"
"""The name the skip transcoder and its training class are registered under in SAELens."""

STOCK_ARCHITECTURE = "jumprelu_skip_transcoder"
"""SAELens's own name for the same parameters (what the training class saves)."""


@dataclass
class GemmaScopeSkipTranscoderConfig(GemmaScopeTranscoderConfig):
    """A Gemma Scope JumpReLU transcoder with an affine skip connection ``W_skip`` [d_out, d_in]."""

    @classmethod
    @override
    def architecture(cls) -> str:
        return ARCHITECTURE


class GemmaScopeSkipTranscoder(GemmaScopeTranscoder):
    """Gemma Scope 2's skip transcoder: the JumpReLU transcoder's output plus ``x W_skip^T``."""

    cfg: GemmaScopeSkipTranscoderConfig  # type: ignore[assignment]
    W_skip: nn.Parameter

    def __init__(self, cfg: GemmaScopeSkipTranscoderConfig):
        super().__init__(cfg)
        self.W_skip = nn.Parameter(
            torch.zeros(cfg.d_out, cfg.d_in, dtype=self.dtype, device=self.device)
        )

    def skip(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        """The skip path alone, ``x W_skip^T``."""
        check_last_dim(x, self.cfg.d_in, "inputs", self)
        return x.to(self.dtype) @ self.W_skip.T

    @override
    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        """The predicted output, skip path included."""
        return self.decode(self.encode(x)) + self.skip(x)

    @override
    def forward_with_activations(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(prediction with the skip path, latent activations), as SAELens's skip transcoder."""
        feature_acts = self.encode(x)
        return self.decode(feature_acts) + self.skip(x), feature_acts

    _config_class = GemmaScopeSkipTranscoderConfig

    @classmethod
    def _widths(cls, params: dict[str, Tensor]) -> tuple[int, int, int]:
        """Widths of ``W_enc, W_dec, b_enc, b_dec, threshold``, and ``W_skip`` [d_out, d_in]."""
        if "W_skip" not in params:
            raise ValueError(
                f"a skip transcoder needs W_skip [d_out, d_in]; got only {sorted(params)} (use "
                "GemmaScopeTranscoder for a transcoder without a skip connection)"
            )
        d_in, d_sae, d_out = jumprelu_widths({k: v for k, v in params.items() if k != "W_skip"})
        if tuple(params["W_skip"].shape) != (d_out, d_in):
            raise ValueError(
                f"W_skip has shape {tuple(params['W_skip'].shape)}, expected (d_out, d_in) = "
                f"{(d_out, d_in)} (Gemma Scope 2's affine_skip_connection is stored transposed)"
            )
        return d_in, d_sae, d_out
