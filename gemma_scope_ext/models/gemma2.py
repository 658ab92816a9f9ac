"""Gemma 2 as data: model sizes, Gemma Scope's sites, and TransformerLens's way of loading it.

The sizes are TransformerLens 3.9's hard-coded Gemma 2 configs (the -it variants share their base
model's shapes); ``tests/models/test_specs.py`` checks every field against TransformerLens itself,
and ``tests/models/test_sites.py`` every site against the Hugging Face implementation.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from gemma_scope_ext.models import hooked
from gemma_scope_ext.models.spec import Family, ModelSpec, Site

__all__ = ["FAMILY", "GEMMA2_MODELS", "SITES", "TINY_MODEL_NAME", "tl_config_from_hf"]

TINY_MODEL_NAME = "tiny-gemma2"

# name: d_model, n_layers, n_heads, d_head, n_kv_heads, d_mlp, query_pre_attn_scalar
_SIZES: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "gemma-2-2b": (2304, 26, 8, 256, 4, 9216, 256),
    "gemma-2-9b": (3584, 42, 16, 256, 8, 14336, 256),
    # 27B scales attention by 1/sqrt(144) = 1/12, not 1/sqrt(d_head).
    "gemma-2-27b": (4608, 46, 32, 128, 16, 36864, 144),
}

GEMMA2_MODELS: dict[str, ModelSpec] = {
    name: ModelSpec(name, d_model, n_layers, n_heads, d_head, n_kv, d_mlp, math.sqrt(qpas))
    for base, (d_model, n_layers, n_heads, d_head, n_kv, d_mlp, qpas) in _SIZES.items()
    for name in (base, f"{base}-it")
}
"""The six official Gemma 2 models by short name (``gemma-2-2b`` ... ``gemma-2-27b-it``)."""

SITES: dict[str, Site] = {
    s.name: s
    for s in (
        Site("res", "blocks.{layer}.hook_resid_post", "blocks.{layer}.hook_resid_post",
             "d_model", True, "residual stream after the block"),
        # TL applies the post-MLP RMSNorm (ln2_post) before hook_mlp_out, as Gemma Scope wants.
        Site("mlp", "blocks.{layer}.hook_mlp_out", "blocks.{layer}.hook_mlp_out",
             "d_model", True, "MLP output after the post-MLP RMSNorm"),
        # hook_z is [batch, pos, head, d_head]; SAEs read it flattened head-major.
        Site("att", "blocks.{layer}.attn.hook_z", "blocks.{layer}.attn.hook_z",
             "d_attn", True, "concatenated head outputs before W_O"),
        # TL's hook_embed is already multiplied by sqrt(d_model); Gemma Scope's embedding SAEs
        # were trained on unscaled embeddings, so the loader rescales their weights.
        Site("embedding", "hook_embed", "hook_embed",
             "d_model", False, "token embeddings"),
        # x / rms(x) before the (1 + w) gain: Gemma Scope folded the gain into the transcoder.
        Site("transcoder", "blocks.{layer}.ln2.hook_normalized", "blocks.{layer}.hook_mlp_out",
             "d_model", True, "MLP input after the pre-MLP RMSNorm (pre-gain) -> MLP output"),
    )
}  # fmt: skip
"""Gemma Scope's sites on Gemma 2 and the TransformerLens hook that carries each one."""


def tl_config_from_hf(hf_config: Any, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """A ``HookedTransformerConfig`` for a Gemma 2 HF config of any size.

    Starts from TransformerLens's hard-coded gemma-2-2b entry (so every structural flag is the one TL
    uses for the real model) and replaces the sizes with the HF config's.
    """
    attn_types = {"sliding_attention": "local", "full_attention": "global"}
    return hooked.hooked_config(
        "google/gemma-2-2b",
        d_model=hf_config.hidden_size,
        d_head=hf_config.head_dim,
        n_heads=hf_config.num_attention_heads,
        n_key_value_heads=hf_config.num_key_value_heads,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=hf_config.max_position_embeddings,
        d_vocab=hf_config.vocab_size,
        eps=hf_config.rms_norm_eps,
        window_size=hf_config.sliding_window,
        attn_types=[attn_types[t] for t in hf_config.layer_types],
        attn_scale=float(hf_config.query_pre_attn_scalar) ** 0.5,
        attn_scores_soft_cap=hf_config.attn_logit_softcapping,
        output_logits_soft_cap=hf_config.final_logit_softcapping,
        rotary_base=float(hf_config.rope_parameters["rope_theta"]),
        model_name=TINY_MODEL_NAME if hf_config.hidden_size < 512 else "gemma-2-custom",
        tokenizer_name=None,
        dtype=dtype,
        device=device,
    )


def _load_pretrained(spec: ModelSpec, device: str, dtype: torch.dtype, **kwargs: Any):
    return hooked.from_pretrained_no_processing(spec.hf_name, device, dtype, **kwargs)


FAMILY = Family(
    name="gemma2",
    hf_architecture="Gemma2ForCausalLM",
    models=GEMMA2_MODELS,
    sites=SITES,
    tiny_model=TINY_MODEL_NAME,
    tl_config=tl_config_from_hf,
    convert_weights=hooked.convert_gemma_weights,
    load_pretrained=_load_pretrained,
)
