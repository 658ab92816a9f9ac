"""Gemma 2 model sizes: the one table of them in this package.

The numbers are TransformerLens 3.9's hard-coded Gemma 2 configs (the -it variants share their base
model's shapes); ``tests/test_models.py`` checks every field against TransformerLens itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["GEMMA2_MODELS", "TINY_MODEL_NAME", "Gemma2Spec", "get_spec"]

TINY_MODEL_NAME = "tiny-gemma2"


@dataclass(frozen=True)
class Gemma2Spec:
    """Shapes of one Gemma 2 model, as TransformerLens sees it."""

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

    @property
    def hf_name(self) -> str:
        """Hugging Face repo id of the model weights."""
        return self.name if "/" in self.name else f"google/{self.name}"

    @property
    def d_attn(self) -> int:
        """Width of the concatenated head outputs (what an attention SAE reads from hook_z)."""
        return self.n_heads * self.d_head

    @classmethod
    def from_tl_config(cls, cfg: Any, name: str | None = None) -> Gemma2Spec:
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
        )


# name: d_model, n_layers, n_heads, d_head, n_kv_heads, d_mlp, query_pre_attn_scalar
_SIZES: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "gemma-2-2b": (2304, 26, 8, 256, 4, 9216, 256),
    "gemma-2-9b": (3584, 42, 16, 256, 8, 14336, 256),
    # 27B scales attention by 1/sqrt(144) = 1/12, not 1/sqrt(d_head).
    "gemma-2-27b": (4608, 46, 32, 128, 16, 36864, 144),
}


def _build_table() -> dict[str, Gemma2Spec]:
    table = {}
    for base, (d_model, n_layers, n_heads, d_head, n_kv, d_mlp, qpas) in _SIZES.items():
        for name in (base, f"{base}-it"):
            table[name] = Gemma2Spec(
                name, d_model, n_layers, n_heads, d_head, n_kv, d_mlp, math.sqrt(qpas)
            )
    return table


GEMMA2_MODELS: dict[str, Gemma2Spec] = _build_table()
"""The six official Gemma 2 models by short name (``gemma-2-2b`` ... ``gemma-2-27b-it``)."""


def get_spec(model: str | Gemma2Spec | Any) -> Gemma2Spec:
    """Resolve a model name, a spec, or a loaded TransformerLens model to its :class:`Gemma2Spec`.

    Names may carry the ``google/`` prefix. ``"tiny-gemma2"`` is the embedded test model.
    """
    if isinstance(model, Gemma2Spec):
        return model
    if isinstance(model, str):
        name = model.removeprefix("google/")
        if name in GEMMA2_MODELS:
            return GEMMA2_MODELS[name]
        if name == TINY_MODEL_NAME:
            from gemma_scope_ext.gemma2 import tiny_spec

            return tiny_spec()
        valid = ", ".join([*GEMMA2_MODELS, TINY_MODEL_NAME])
        raise ValueError(f"unknown model {model!r}; expected one of: {valid}")
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "d_model"):
        return Gemma2Spec.from_tl_config(cfg)
    raise ValueError(
        f"cannot read a Gemma 2 spec from {type(model).__name__}; expected a model name, "
        "a Gemma2Spec, or a TransformerLens model with a .cfg"
    )
