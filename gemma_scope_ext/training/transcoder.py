"""Training Gemma Scope's JumpReLU transcoder with the recipe, as a SAELens training class.

The recipe is the SAE's (``training/sae.py``); a transcoder differs in its widths (input d_in,
output d_out), in never subtracting ``b_dec`` from its input, and in scaling input and target by
separate scalars. It saves as a stock ``jumprelu_transcoder`` that SAELens loads without this package.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from jaxtyping import Float
from sae_lens.saes.transcoder import JumpReLUTranscoderConfig
from torch import Tensor, nn
from typing_extensions import override

from gemma_scope_ext.saes.transcoder import ARCHITECTURE, GemmaScopeTranscoderConfig
from gemma_scope_ext.training.config import GemmaScopeTrainingSAEConfig
from gemma_scope_ext.training.sae import GemmaScopeTrainingSAE

__all__ = ["GemmaScopeTrainingTranscoder", "GemmaScopeTrainingTranscoderConfig"]


@dataclass(kw_only=True)
class GemmaScopeTrainingTranscoderConfig(GemmaScopeTrainingSAEConfig):
    """The Gemma Scope JumpReLU recipe for a transcoder; every default is Gemma Scope's.

    The input and the target each get their own scalar (E[||s x||^2] = 1, E[||s y||^2] = 1),
    estimated from the first batch and folded into the weights at save.
    """

    d_out: int | None = None
    """Width of the predicted activation; None means the input width ``d_in``."""

    def __post_init__(self) -> None:
        if self.d_out is None:
            self.d_out = self.d_in
        super().__post_init__()
        if self.d_out < 1:
            raise ValueError(f"d_out must be positive, got {self.d_out}")
        if self.apply_b_dec_to_input:
            raise ValueError(
                "apply_b_dec_to_input=True is impossible for a transcoder: b_dec lives in the "
                "output space; leave it False (Gemma Scope never centres the input)"
            )
        if self.normalize_activations != "none" or self.reshape_activations != "none":
            raise ValueError(
                "a transcoder scales its input and target with input_scaling; expected "
                "normalize_activations='none' and reshape_activations='none', got "
                f"{self.normalize_activations!r} and {self.reshape_activations!r}"
            )

    @override
    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE

    @override
    def get_inference_config_class(self) -> type[JumpReLUTranscoderConfig]:
        return GemmaScopeTranscoderConfig

    @override
    def get_inference_sae_cfg_dict(self) -> dict[str, Any]:
        """The saved config: SAELens's stock ``jumprelu_transcoder`` format, scales folded in."""
        result = {f.name: getattr(self, f.name) for f in fields(JumpReLUTranscoderConfig)}
        result["architecture"] = JumpReLUTranscoderConfig.architecture()
        result["metadata"] = self._metadata_with_training_info()
        return result


class GemmaScopeTrainingTranscoder(GemmaScopeTrainingSAE):
    """A JumpReLU transcoder trained with the Gemma Scope recipe.

    The trainer's batches are packed pairs ``[x | y]`` (see ``TranscoderActivationsStore``): the loss
    is ||s_out y - y_hat||^2 + lambda L0 on the scaled pair. ``encode``/``decode`` take raw ``x`` and
    return raw ``y_hat``, so evaluation and splicing need no knowledge of the scalars.
    """

    cfg: GemmaScopeTrainingTranscoderConfig  # type: ignore[assignment]

    def __init__(self, cfg: GemmaScopeTrainingTranscoderConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)  # type: ignore[arg-type]

    @property
    def d_out(self) -> int:
        """Width of the predicted activation."""
        return int(self.cfg.d_out)  # type: ignore[arg-type]

    @override
    def initialize_weights(self) -> None:
        # The SAE recipe builds W_dec [d_sae, d_in] with unit rows and W_enc = W_dec^T; for d_out
        # == d_in that is kept as is, otherwise the decoder is redrawn the same way at d_out.
        super().initialize_weights()
        d_out = int(self.cfg.d_out)  # type: ignore[arg-type]
        if d_out != self.cfg.d_in:
            w_dec = torch.empty(self.cfg.d_sae, d_out, dtype=self.dtype, device=self.device)
            nn.init.kaiming_uniform_(w_dec)
            if self.cfg.decoder_init_norm is not None:
                w_dec *= self.cfg.decoder_init_norm / w_dec.norm(dim=-1, keepdim=True)
            self.W_dec = nn.Parameter(w_dec)
        self.b_dec = nn.Parameter(torch.zeros(d_out, dtype=self.dtype, device=self.device))

    @override
    def training_batch(self, sae_in: Tensor) -> tuple[Tensor, Tensor]:
        """Split the packed ``[x | y]`` batch into input and target."""
        expected = self.cfg.d_in + self.d_out
        if sae_in.shape[-1] != expected:
            raise ValueError(
                f"a transcoder trains on packed [x | y] rows of width d_in + d_out = {expected}, "
                f"got width {sae_in.shape[-1]}; feed it from TranscoderActivationsStore "
                "(TranscoderTrainingRunner does), not a single-hook ActivationsStore"
            )
        return sae_in[..., : self.cfg.d_in], sae_in[..., self.cfg.d_in :]

    @override
    def process_sae_in(self, sae_in: Tensor) -> Tensor:
        """Raw input -> scaled encoder input; ``b_dec`` (output space) is never subtracted."""
        sae_in = self.run_time_activation_norm_fn_in(self.hook_sae_input(sae_in.to(self.dtype)))
        return sae_in * self.input_scale.to(self.dtype)

    def forward_with_activations(
        self, x: Float[Tensor, "... d_in"]
    ) -> tuple[Float[Tensor, "... d_out"], Float[Tensor, "... d_sae"]]:
        """(raw prediction y_hat, latent activations), as SAELens's ``Transcoder`` returns them."""
        feature_acts = self.encode(x)
        return self.decode(feature_acts), feature_acts
