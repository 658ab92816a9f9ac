"""What describes a model family: the shapes of each model, Gemma Scope's sites, how to load it.

Each family (Gemma 2 in ``gemma2.py``) fills one :class:`Family` with its data; ``families.py`` lists
the families, and everything else (hook names, loading, the catalog) reads them through it. A new
family joins as one more module of data and one entry in that list.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["Family", "Gemma2Spec", "ModelSpec", "Site", "spec_from_hf_config"]


@dataclass(frozen=True)
class ModelSpec:
    """Shapes of one model, as TransformerLens sees it."""

    name: str
    """Short name, e.g. ``"gemma-2-2b"`` (the Hugging Face repo is ``google/<name>``)."""
    d_model: int
    """Residual stream width."""
    n_layers: int
    """Number of transformer blocks."""
    n_heads: int
    """Query heads per layer."""
    d_head: int
    """Width of one head."""
    n_key_value_heads: int
    """Key/value heads per layer (grouped-query attention)."""
    d_mlp: int
    """Hidden width of the gated MLP."""
    attn_scale: float
    """Attention logits are divided by this: sqrt(query_pre_attn_scalar)."""
    d_vocab: int = 256000
    """Vocabulary size."""
    family: str = "gemma2"
    """Key of the model's family in ``FAMILIES``."""
    n_ctx: int = 8192
    """Longest sequence the model's positions cover (Gemma 2: 8192)."""

    @property
    def hf_name(self) -> str:
        """Hugging Face repo id of the model weights."""
        return self.name if "/" in self.name else f"google/{self.name}"

    @property
    def d_attn(self) -> int:
        """Width of the concatenated head outputs (what an attention SAE reads from hook_z)."""
        return self.n_heads * self.d_head

    @classmethod
    def from_tl_config(cls, cfg: Any, name: str | None = None, family: str = "gemma2") -> ModelSpec:
        """The spec of a loaded TransformerLens model (HookedTransformer or TransformerBridge)."""
        scale = cfg.attn_scale if getattr(cfg, "use_attn_scale", True) else 1.0
        return cls(
            name=name or str(getattr(cfg, "model_name", "custom")),
            d_model=cfg.d_model,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            d_head=cfg.d_head,
            n_key_value_heads=cfg.n_key_value_heads or cfg.n_heads,
            d_mlp=cfg.d_mlp,
            attn_scale=float(scale),
            d_vocab=cfg.d_vocab,
            family=family,
            n_ctx=cfg.n_ctx,
        )


Gemma2Spec = ModelSpec
"""The name wave-one code knows :class:`ModelSpec` by."""


def spec_from_hf_config(config: Mapping[str, Any] | Path, name: str, family: str) -> ModelSpec:
    """A spec from a Hugging Face config (a dict, or a folder holding ``config.json``)."""
    if isinstance(config, Path):
        config = json.loads((config / "config.json").read_text())
    c = config.get("text_config", config)  # multimodal configs nest the language model's
    return ModelSpec(
        name=name,
        d_model=c["hidden_size"],
        n_layers=c["num_hidden_layers"],
        n_heads=c["num_attention_heads"],
        d_head=c["head_dim"],
        n_key_value_heads=c["num_key_value_heads"],
        d_mlp=c["intermediate_size"],
        attn_scale=math.sqrt(c["query_pre_attn_scalar"]),
        d_vocab=c["vocab_size"],
        family=family,
        n_ctx=c.get("max_position_embeddings", 8192),
    )


@dataclass(frozen=True)
class Site:
    """One place in a model where Gemma Scope trained SAEs (or transcoders)."""

    name: str
    """Gemma Scope's name for the site (the suffix of the release: ``res``, ``mlp``, ``att``...)."""
    hook_in: str
    """TransformerLens hook the SAE reads, with ``{layer}`` for the block index."""
    hook_out: str
    """Hook the SAE's reconstruction replaces (differs from ``hook_in`` only for transcoders)."""
    width: Literal["d_model", "d_attn"]
    """Input width: the residual width, or n_heads * d_head for head outputs."""
    per_layer: bool
    """False for the one site outside the blocks (the token embedding)."""
    what: str
    """What Gemma Scope trained on, in words."""


def _leave_as_is(model: Any) -> None:
    """The default ``Family.finish_model``: the converted model is complete."""


@dataclass(frozen=True)
class Family:
    """A model family: its models, Gemma Scope's sites on it, and how TransformerLens loads it."""

    name: str
    """Key in ``FAMILIES``, e.g. ``"gemma2"``."""
    hf_architecture: str
    """``architectures[0]`` of its Hugging Face configs, e.g. ``"Gemma2ForCausalLM"``."""
    models: Mapping[str, ModelSpec]
    """Every released model by short name."""
    sites: Mapping[str, Site]
    """Gemma Scope's sites on this family, by site name."""
    tiny_model: str
    """Name of the embedded tiny model of this family (its folder is ``models/data/<name>``)."""
    tl_config: Callable[..., Any]
    """``tl_config(hf_config, dtype=..., device=...)``: a ``HookedTransformerConfig``."""
    convert_weights: Callable[[Any, Any], dict]
    """``convert_weights(hf_model, tl_cfg)``: TransformerLens state dict of an HF model."""
    load_pretrained: Callable[..., Any]
    """``load_pretrained(spec, device=..., dtype=..., **kwargs)``: a released model, unprocessed."""
    other_architectures: tuple[str, ...] = ()
    """Further ``architectures[0]`` values of the family (multimodal wrappers of the same text
    model, e.g. ``"Gemma3ForConditionalGeneration"``)."""
    finish_model: Callable[[Any], None] = _leave_as_is
    """``finish_model(model)``: what the family's loader does to a converted ``HookedTransformer``
    before handing it out (Gemma 3: add the hook points its transcoders read)."""

    @property
    def hf_architectures(self) -> tuple[str, ...]:
        """Every ``architectures[0]`` of this family's Hugging Face models."""
        return (self.hf_architecture, *self.other_architectures)
