"""The Gemma Scope JumpReLU SAE for inference, as a SAELens ``SAE``.

Parameters, names and shapes are SAELens's ``JumpReLUSAE``'s (``W_enc`` [d_in, d_sae], ``W_dec``
[d_sae, d_in], ``b_enc`` [d_sae], ``b_dec`` [d_in], ``threshold`` [d_sae]), so released ``params.npz``
files and SAELens checkpoints load unchanged. Two things differ from the stock class:

- the encoder reads raw activations: Gemma Scope never subtracts ``b_dec`` from the input
  (``apply_b_dec_to_input`` defaults to False);
- decoding sums only the decoder rows of active latents when that is faster (see
  ``gemma_scope_ext.saes.sparse_decode``); values and gradients are those of the dense product.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
from torch import Tensor
from typing_extensions import override

from gemma_scope_ext.saes.params import (
    check_finite,
    check_last_dim,
    jumprelu_widths,
    rescale_for_hook_embed,
)
from gemma_scope_ext.saes.saving import save_inference_sae
from gemma_scope_ext.saes.sparse_decode import decode_active, use_sparse_decode

__all__ = ["ARCHITECTURE", "GemmaScopeSAE", "GemmaScopeSAEConfig"]

ARCHITECTURE = "gemma_scope_jumprelu"
"""The name the SAE and its training class are registered under in SAELens."""


@dataclass
class GemmaScopeSAEConfig(JumpReLUSAEConfig):
    """A Gemma Scope JumpReLU SAE: SAELens's ``JumpReLUSAEConfig`` reading raw activations."""

    apply_b_dec_to_input: bool = False
    """Subtract ``b_dec`` from the input before encoding. Gemma Scope does not; keep False for
    released weights."""

    sparse_decode: bool = True
    """Decode by summing active decoder rows when the measured density makes it faster."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_in < 1 or self.d_sae < 1:
            raise ValueError(
                f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}"
            )

    @override
    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE


class GemmaScopeSAE(JumpReLUSAE):
    """Gemma Scope's JumpReLU SAE: f = JumpReLU_theta(x W_enc + b_enc), x_hat = f W_dec + b_dec.

    Hook points, ``use_error_term`` and hook_z reshaping (``reshape_activations="hook_z"``) are
    SAELens's.
    """

    cfg: GemmaScopeSAEConfig  # type: ignore[assignment]

    def __init__(self, cfg: GemmaScopeSAEConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)  # type: ignore[arg-type]

    @override
    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Latent activations: z = x W_enc + b_enc, kept where z > threshold, else 0."""
        # reshape_fn_in is a view (hook_z flattened head-major when on): checked before use
        check_last_dim(self.reshape_fn_in(x), self.cfg.d_in, "inputs", self)
        sae_in = self.process_sae_in(x)
        hidden_pre = self.hook_sae_acts_pre(sae_in @ self.W_enc + self.b_enc)
        # Written as a mask rather than ReLU(z) * mask: identical while threshold >= 0, and it
        # keeps Gemma Scope's definition if a threshold were ever negative.
        acts = hidden_pre * (hidden_pre > self.threshold).to(hidden_pre.dtype)
        return self.hook_sae_acts_post(acts)

    @override
    def decode(self, feature_acts: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        """Reconstruction f W_dec + b_dec (sparse when faster), through ``hook_sae_recons``."""
        check_last_dim(feature_acts, self.cfg.d_sae, "feature activations", self)
        if self.cfg.sparse_decode and use_sparse_decode(feature_acts, self.W_dec):
            sae_out_pre = decode_active(feature_acts, self.W_dec) + self.b_dec
        else:
            sae_out_pre = feature_acts @ self.W_dec + self.b_dec
        sae_out_pre = self.hook_sae_recons(sae_out_pre)
        sae_out_pre = self.run_time_activation_norm_fn_out(sae_out_pre)
        return self.reshape_fn_out(sae_out_pre, self.d_head)

    @override
    def save_model(self, path: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
        """SAELens's ``save_model``, written atomically; a folder that already holds a saved SAE
        is refused (FileExistsError) unless ``overwrite``."""
        return save_inference_sae(self, path, overwrite)

    @classmethod
    def from_params(
        cls,
        params: dict[str, Tensor],
        hook_name: str | None = None,
        model_name: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        embedding_scale: float | None = None,
        **metadata,
    ) -> GemmaScopeSAE:
        """An SAE holding the given ``W_enc, W_dec, b_enc, b_dec, threshold`` (e.g. a params.npz).

        At ``hook_embed`` say what the weights expect: ``embedding_scale=sqrt(d_model)`` for a
        released Gemma Scope embedding SAE (trained on unscaled embeddings; TransformerLens's
        ``hook_embed`` is scaled), ``1.0`` for weights already made for ``hook_embed``.
        """
        from sae_lens.saes.sae import SAEMetadata

        if hook_name == "hook_embed":
            if embedding_scale is None:
                raise ValueError(
                    "hook_embed carries embeddings scaled by sqrt(d_model), but Gemma Scope's "
                    "embedding SAEs were trained on unscaled ones: pass embedding_scale="
                    "sqrt(d_model) for released weights, or 1.0 if they already expect hook_embed"
                )
            params = rescale_for_hook_embed(params, embedding_scale)

        d_in, d_sae, d_out = jumprelu_widths(params)
        check_finite(params, f"{cls.__name__}.from_params")
        if d_out != d_in:
            raise ValueError(
                f"an SAE reconstructs its input: W_dec has shape {(d_sae, d_out)}, expected "
                f"{(d_sae, d_in)} for W_enc {(d_in, d_sae)} (use GemmaScopeTranscoder for d_out)"
            )
        reshape = "hook_z" if hook_name is not None and hook_name.endswith("hook_z") else "none"
        cfg = GemmaScopeSAEConfig(
            d_in=d_in, d_sae=d_sae, dtype=dtype, device=device, reshape_activations=reshape,
            metadata=SAEMetadata(hook_name=hook_name, model_name=model_name, **metadata),
        )  # fmt: skip
        sae = cls(cfg)
        with torch.no_grad():
            for name, value in params.items():
                getattr(sae, name).copy_(torch.as_tensor(value))
        return sae
