"""Gemma Scope's JumpReLU transcoder for inference, as a SAELens ``JumpReLUTranscoder``.

A transcoder reads the MLP input just after the pre-MLP RMSNorm, before its gain
(``blocks.{L}.ln2.hook_normalized``: Gemma Scope folded the gain into the transcoder) and predicts the
MLP output after the post-MLP RMSNorm (``blocks.{L}.hook_mlp_out``):

    f = JumpReLU_theta(x W_enc + b_enc),    y_hat = f W_dec + b_dec.

Unlike an SAE it never subtracts ``b_dec`` from its input (``b_dec`` lives in the output space).
Parameters, names and shapes are SAELens's ``JumpReLUTranscoder``'s, so a trained transcoder saves as
a stock ``jumprelu_transcoder`` that SAELens loads without this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from sae_lens.saes.sae import SAEMetadata
from sae_lens.saes.transcoder import JumpReLUTranscoder, JumpReLUTranscoderConfig
from torch import Tensor
from typing_extensions import override

from gemma_scope_ext.saes.params import check_finite, check_last_dim, jumprelu_widths
from gemma_scope_ext.saes.saving import save_inference_sae

__all__ = ["ARCHITECTURE", "GemmaScopeTranscoder", "GemmaScopeTranscoderConfig"]

ARCHITECTURE = "gemma_scope_jumprelu_transcoder"
"""The name the transcoder and its training class are registered under in SAELens."""


@dataclass
class GemmaScopeTranscoderConfig(JumpReLUTranscoderConfig):
    """SAELens's ``JumpReLUTranscoderConfig`` with Gemma Scope's defaults.

    ``metadata.hook_name`` is the input hook and ``metadata.hook_name_out`` the hook whose value the
    output replaces, as SAELens's ``HookedSAETransformer`` expects.
    """

    apply_b_dec_to_input: bool = False
    """Must stay False: ``b_dec`` has the output width, and Gemma Scope never centres the input."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.d_in, self.d_sae, self.d_out) < 1:
            raise ValueError(
                f"d_in, d_sae and d_out must be positive, got {self.d_in}, {self.d_sae}, "
                f"{self.d_out}"
            )

    @override
    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE


class GemmaScopeTranscoder(JumpReLUTranscoder):
    """Gemma Scope's JumpReLU transcoder, SAELens's ``JumpReLUTranscoder`` with Gemma Scope metadata.

    Encoding, decoding and hook points are SAELens's; ``HookedSAETransformer.add_sae`` splices it in
    (input captured at ``hook_name``, output written at ``hook_name_out``).
    """

    cfg: GemmaScopeTranscoderConfig  # type: ignore[assignment]

    def __init__(self, cfg: GemmaScopeTranscoderConfig):
        super().__init__(cfg)  # type: ignore[arg-type]

    @override
    def encode(self, x: Tensor) -> Tensor:
        """Latent activations of the MLP input ``x`` (width d_in)."""
        check_last_dim(x, self.cfg.d_in, "inputs", self)
        return super().encode(x)

    @override
    def decode(self, feature_acts: Tensor) -> Tensor:
        """The predicted MLP output (width d_out) of latent activations."""
        check_last_dim(feature_acts, self.cfg.d_sae, "feature activations", self)
        return super().decode(feature_acts)

    @override
    def save_model(self, path: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
        """SAELens's ``save_model``, written atomically; a folder that already holds a saved SAE
        is refused (FileExistsError) unless ``overwrite``."""
        return save_inference_sae(self, path, overwrite)

    _config_class: type[GemmaScopeTranscoderConfig] = GemmaScopeTranscoderConfig

    @classmethod
    def _widths(cls, params: dict[str, Tensor]) -> tuple[int, int, int]:
        """(d_in, d_sae, d_out) of ``params``, checked."""
        return jumprelu_widths(params)

    @classmethod
    def from_params(
        cls,
        params: dict[str, Tensor],
        hook_name: str | None = None,
        hook_name_out: str | None = None,
        model_name: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        **metadata,
    ) -> GemmaScopeTranscoder:
        """A transcoder holding ``W_enc, W_dec, b_enc, b_dec, threshold`` (e.g. a params.npz)."""
        d_in, d_sae, d_out = cls._widths(params)
        check_finite(params, f"{cls.__name__}.from_params")
        cfg = cls._config_class(
            d_in=d_in, d_sae=d_sae, d_out=d_out, dtype=dtype, device=device,
            metadata=SAEMetadata(hook_name=hook_name, hook_name_out=hook_name_out,
                                 model_name=model_name, **metadata),
        )  # fmt: skip
        transcoder = cls(cfg)
        with torch.no_grad():
            for name, value in params.items():
                getattr(transcoder, name).copy_(torch.as_tensor(value))
        return transcoder
