"""Training Gemma Scope 2's JumpReLU skip transcoder with the recipe, as a SAELens training class.

The transcoder's recipe (``training/transcoder.py``) plus an affine skip path ``W_skip`` [d_out, d_in],
initialised to zero (as SAELens's skip transcoders are) and trained with everything else:

    y_hat_scaled = f W_dec + b_dec + (s_in x) W_skip^T,    y_hat = y_hat_scaled / s_out.

The skip path is dense, so the step is always the dense one. At save the scalars are folded in
(``W_skip * s_in / s_out``) and the folder is SAELens's stock ``jumprelu_skip_transcoder``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from sae_lens.saes.transcoder import JumpReLUSkipTranscoderConfig
from torch import Tensor, nn
from typing_extensions import override

from gemma_scope_ext.saes.skip_transcoder import ARCHITECTURE, GemmaScopeSkipTranscoderConfig
from gemma_scope_ext.training.transcoder import (
    GemmaScopeTrainingTranscoder,
    GemmaScopeTrainingTranscoderConfig,
)

__all__ = ["GemmaScopeTrainingSkipTranscoder", "GemmaScopeTrainingSkipTranscoderConfig"]


@dataclass(kw_only=True)
class GemmaScopeTrainingSkipTranscoderConfig(GemmaScopeTrainingTranscoderConfig):
    """The Gemma Scope JumpReLU recipe for a transcoder with an affine skip connection."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sparse_training == "on":
            raise ValueError(
                "sparse_training='on' is impossible for a skip transcoder: its skip path is dense; "
                "use 'auto' or 'off' (both train it with the dense step)"
            )

    @override
    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE

    @override
    def get_inference_config_class(self) -> type[JumpReLUSkipTranscoderConfig]:
        return GemmaScopeSkipTranscoderConfig

    @override
    def get_inference_sae_cfg_dict(self) -> dict[str, Any]:
        """The saved config: SAELens's stock ``jumprelu_skip_transcoder``, scales folded in."""
        result = {f.name: getattr(self, f.name) for f in fields(JumpReLUSkipTranscoderConfig)}
        result["architecture"] = JumpReLUSkipTranscoderConfig.architecture()
        result["metadata"] = self._metadata_with_training_info()
        return result


class GemmaScopeTrainingSkipTranscoder(GemmaScopeTrainingTranscoder):
    """A JumpReLU skip transcoder trained with the Gemma Scope recipe (raw in, raw out)."""

    cfg: GemmaScopeTrainingSkipTranscoderConfig  # type: ignore[assignment]
    W_skip: nn.Parameter

    @override
    def initialize_weights(self) -> None:
        super().initialize_weights()
        self.W_skip = nn.Parameter(
            torch.zeros(self.d_out, self.cfg.d_in, dtype=self.dtype, device=self.device)
        )

    def skip(self, x: Tensor) -> Tensor:
        """The skip path in the raw space: ``x W_skip^T s_in / s_out``."""
        ratio = (self.input_scale / self.target_scale).to(self.dtype)
        return (x.to(self.dtype) @ self.W_skip.T) * ratio

    @override
    def _decode_scaled(self, feature_acts: Tensor, sae_in: Tensor) -> Tensor:
        return super()._decode_scaled(feature_acts, sae_in) + sae_in @ self.W_skip.T

    @override
    def _sparse_step_applies(self, sae_in: Tensor, target: Tensor) -> bool:
        return False

    @override
    def forward(self, x: Tensor) -> Tensor:
        """The raw prediction, skip path included."""
        return self.decode(self.encode(x)) + self.skip(x)

    @override
    def forward_with_activations(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(raw prediction with the skip path, latent activations)."""
        feature_acts = self.encode(x)
        return self.decode(feature_acts) + self.skip(x), feature_acts

    @override
    @torch.no_grad()
    def fold_scales(self) -> None:
        self.W_skip.data *= (self.input_scale / self.target_scale).to(self.W_skip.dtype)
        super().fold_scales()

    @override
    @torch.no_grad()
    def inference_state_dict(self) -> dict[str, Tensor]:
        """Stock ``jumprelu_skip_transcoder`` parameters, scales folded in; the module untouched."""
        ratio = (self.input_scale / self.target_scale).item()
        return {**super().inference_state_dict(), "W_skip": (self.W_skip * ratio).contiguous()}
