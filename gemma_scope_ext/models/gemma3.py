"""Gemma 3 as data: model sizes, Gemma Scope 2's sites, and TransformerLens's way of loading it.

The sizes are TransformerLens 3.9's hard-coded Gemma 3 configs (-it variants share their base model's
shapes), with one deliberate difference: the attention scale. TransformerLens scales attention by
sqrt(d_head) for every Gemma 3, but Gemma 3 divides by sqrt(query_pre_attn_scalar), and 27b's is 168
(= d_model / n_heads) with d_head 128; the other sizes have query_pre_attn_scalar = d_head = 256, where
the two agree. ``tests/models/test_gemma3_specs.py`` checks every field against TransformerLens and
names that one difference; ``tests/models/test_gemma3_sites.py`` checks every site against the Hugging
Face implementation.

4b, 12b and 27b are multimodal in Hugging Face (``Gemma3ForConditionalGeneration``, the language
model's config nested as ``text_config``); Gemma Scope 2 reads only the language model.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from gemma_scope_ext.models import hooked
from gemma_scope_ext.models.mlp_hooks import MLP_INPUT_HOOK, add_mlp_input_hooks
from gemma_scope_ext.models.spec import Family, ModelSpec, Site

__all__ = ["FAMILY", "GEMMA3_MODELS", "SITES", "TINY_MODEL_NAME", "tl_config_from_hf"]

TINY_MODEL_NAME = "tiny-gemma3"

# Hugging Face names: (base, instruction-tuned); the 270m base model has no "-pt" suffix.
# sizes: d_model, n_layers, n_heads, d_head, n_kv_heads, d_mlp, query_pre_attn_scalar, d_vocab
_SIZES: dict[tuple[str, str], tuple[int, int, int, int, int, int, int, int]] = {
    ("gemma-3-270m", "gemma-3-270m-it"): (640, 18, 4, 256, 1, 2048, 256, 262144),
    ("gemma-3-1b-pt", "gemma-3-1b-it"): (1152, 26, 4, 256, 1, 6912, 256, 262144),
    # The multimodal models' vocabulary adds 64 image tokens.
    ("gemma-3-4b-pt", "gemma-3-4b-it"): (2560, 34, 8, 256, 4, 10240, 256, 262208),
    ("gemma-3-12b-pt", "gemma-3-12b-it"): (3840, 48, 16, 256, 8, 15360, 256, 262208),
    # 27B scales attention by 1/sqrt(168), not 1/sqrt(d_head = 128); TransformerLens uses the latter.
    ("gemma-3-27b-pt", "gemma-3-27b-it"): (5376, 62, 32, 128, 16, 21504, 168, 262208),
}

GEMMA3_MODELS: dict[str, ModelSpec] = {
    name: ModelSpec(name, d_model, n_layers, n_heads, d_head, n_kv, d_mlp, math.sqrt(qpas),
                    d_vocab=d_vocab, family="gemma3")
    for names, (d_model, n_layers, n_heads, d_head, n_kv, d_mlp, qpas, d_vocab) in _SIZES.items()
    for name in names
}  # fmt: skip
"""The ten Gemma 3 models by Hugging Face short name (``gemma-3-270m``, ``gemma-3-270m-it``,
``gemma-3-1b-pt`` ... ``gemma-3-27b-it``). n_ctx is TransformerLens's default of 8192 (the models
support 32k-128k)."""

_TRANSCODER_IN = MLP_INPUT_HOOK  # blocks.{layer}.mlp.hook_in, added by the package's loader

SITES: dict[str, Site] = {
    s.name: s
    for s in (
        # HF model.layers.L.output.
        Site("res", "blocks.{layer}.hook_resid_post", "blocks.{layer}.hook_resid_post",
             "d_model", True, "residual stream after the block"),
        # HF post_feedforward_layernorm.output: TL applies ln2_post before hook_mlp_out.
        Site("mlp", "blocks.{layer}.hook_mlp_out", "blocks.{layer}.hook_mlp_out",
             "d_model", True, "MLP output after the post-MLP RMSNorm"),
        # HF self_attn.o_proj.input; hook_z is [batch, pos, head, d_head], read flattened head-major.
        Site("att", "blocks.{layer}.attn.hook_z", "blocks.{layer}.attn.hook_z",
             "d_attn", True, "concatenated head outputs before W_O"),
        # HF pre_feedforward_layernorm.output: AFTER the norm's gain (unlike Gemma Scope 1, which
        # folded the gain into its transcoders). No HookedTransformer hook carries it (hook_mlp_in
        # is the pre-norm residual); mlp.hook_in is a HookPoint on the MLP's input.
        Site("transcoder", _TRANSCODER_IN, "blocks.{layer}.hook_mlp_out",
             "d_model", True, "MLP input after the pre-MLP RMSNorm and its gain -> MLP output"),
        # The same hooks; the transcoder adds an affine skip term x @ W_skip to its output.
        Site("transcoder_skip", _TRANSCODER_IN, "blocks.{layer}.hook_mlp_out",
             "d_model", True, "as transcoder, with an affine skip connection from input to output"),
    )
}  # fmt: skip
"""Gemma Scope 2's sites on Gemma 3 and the TransformerLens hook that carries each one."""

_ATTN_TYPES = {"sliding_attention": "local", "full_attention": "global"}


def _rope(hf: Any) -> dict[str, float]:
    """TransformerLens's rotary fields from HF's per-layer-type rope parameters."""
    params = hf.rope_parameters
    local, full = params["sliding_attention"], params["full_attention"]
    for kind, p in (("sliding_attention", local), ("full_attention", full)):
        if p.get("rope_type", "default") not in ("default", "linear"):
            raise ValueError(
                f"{kind} layers use rope_type {p['rope_type']!r}; TransformerLens's Gemma 3 has only "
                "default and linear rope scaling, so this model cannot be converted exactly"
            )
    if local.get("rope_type", "default") == "linear" and local.get("factor", 1.0) != 1.0:
        raise ValueError("linear rope scaling on sliding layers: TransformerLens scales only global "
                         "layers, as every released Gemma 3 does")  # fmt: skip
    factor = full.get("factor", 1.0) if full.get("rope_type", "default") == "linear" else 1.0
    return {"rotary_base": float(full["rope_theta"]),
            "rotary_base_local": float(local["rope_theta"]),
            "rotary_scaling_factor": float(factor)}  # fmt: skip


def tl_config_from_hf(hf_config: Any, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """A ``HookedTransformerConfig`` for a Gemma 3 HF config of any size (text or multimodal).

    Starts from TransformerLens's hard-coded gemma-3-270m entry (so every structural flag is the one
    TL uses for the real models) and replaces the sizes, rope bases and scaling, window and layer
    pattern with the HF config's. TransformerLens takes none of these from a config it is handed.
    ``attn_scale`` is sqrt(query_pre_attn_scalar), which TransformerLens never sets for Gemma 3.
    """
    hf = hf_config.get_text_config()
    return hooked.hooked_config(
        "google/gemma-3-270m",
        d_model=hf.hidden_size,
        d_head=hf.head_dim,
        n_heads=hf.num_attention_heads,
        n_key_value_heads=hf.num_key_value_heads,
        d_mlp=hf.intermediate_size,
        n_layers=hf.num_hidden_layers,
        n_ctx=min(hf.max_position_embeddings, 8192),  # TL's default: its masks are n_ctx^2
        d_vocab=hf.vocab_size,
        eps=hf.rms_norm_eps,
        window_size=hf.sliding_window,
        attn_types=[_ATTN_TYPES[t] for t in hf.layer_types],
        attn_scale=float(hf.query_pre_attn_scalar) ** 0.5,
        model_name=TINY_MODEL_NAME if hf.hidden_size < 512 else "gemma-3-custom",
        # Multimodal configs nest the text model's (a config built in memory names no architecture).
        original_architecture="Gemma3ForCausalLM" if hf is hf_config
        else "Gemma3ForConditionalGeneration",
        tokenizer_name=None,
        dtype=dtype,
        device=device,
        **_rope(hf),
    )


def set_attn_scale(model: Any, attn_scale: float) -> None:
    """Divide attention scores by ``attn_scale`` in every block (TL caches it per attention)."""
    model.cfg.attn_scale = attn_scale
    for block in model.blocks:
        block.attn.attn_scale = attn_scale


def _load_pretrained(spec: ModelSpec, device: str, dtype: torch.dtype, **kwargs: Any):
    model = hooked.from_pretrained_no_processing(spec.hf_name, device, dtype, **kwargs)
    set_attn_scale(model, spec.attn_scale)  # TL's sqrt(d_head) is wrong for 27b
    add_mlp_input_hooks(model)
    return model


FAMILY = Family(
    name="gemma3",
    hf_architecture="Gemma3ForCausalLM",
    models=GEMMA3_MODELS,
    sites=SITES,
    tiny_model=TINY_MODEL_NAME,
    tl_config=tl_config_from_hf,
    convert_weights=hooked.convert_gemma_weights,
    load_pretrained=_load_pretrained,
    other_architectures=("Gemma3ForConditionalGeneration",),
    finish_model=add_mlp_input_hooks,
)
