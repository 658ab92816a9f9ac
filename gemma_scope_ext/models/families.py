"""The model families this package knows, and resolving a name or a loaded model to its spec.

``FAMILIES`` is the one list of them; a family is one module of data (see ``gemma2.py``). Every
lookup by model name, Hugging Face architecture or loaded TransformerLens model goes through here,
so no other code matches substrings of model names.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from gemma_scope_ext.models.gemma2 import FAMILY as GEMMA2
from gemma_scope_ext.models.gemma2 import TINY_MODEL_NAME
from gemma_scope_ext.models.gemma3 import FAMILY as GEMMA3
from gemma_scope_ext.models.spec import Family, ModelSpec, spec_from_hf_config

__all__ = [
    "FAMILIES",
    "family_of",
    "get_family",
    "get_spec",
    "known_models",
    "tiny_dir",
    "tiny_model_names",
    "tiny_spec",
]

FAMILIES: dict[str, Family] = {f.name: f for f in (GEMMA2, GEMMA3)}
"""Every supported model family by key."""


def get_family(name: str) -> Family:
    """A family by key (``"gemma2"``)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; expected one of: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def known_models() -> list[str]:
    """Every model name ``get_spec`` accepts: released models, then the embedded tiny ones."""
    names = [m for f in FAMILIES.values() for m in f.models]
    return names + [f.tiny_model for f in FAMILIES.values()]


def tiny_model_names() -> list[str]:
    """The embedded tiny models, one per family (``tiny-gemma2``, ``tiny-gemma3``)."""
    return [f.tiny_model for f in FAMILIES.values()]


def tiny_dir(name: str = TINY_MODEL_NAME) -> Path:
    """Folder of an embedded tiny model (HF config, safetensors weights, tokenizer)."""
    tiny = {f.tiny_model for f in FAMILIES.values()}
    if name not in tiny:
        raise ValueError(f"unknown tiny model {name!r}; expected one of: {', '.join(sorted(tiny))}")
    folder = name.replace("-", "_")
    return Path(str(files("gemma_scope_ext.models") / "data" / folder))


@cache
def tiny_spec(name: str = TINY_MODEL_NAME) -> ModelSpec:
    """Shapes of an embedded tiny model, read from its config."""
    return spec_from_hf_config(tiny_dir(name), name, _tiny_family(name).name)


def _tiny_family(name: str) -> Family:
    return next(f for f in FAMILIES.values() if f.tiny_model == name)


def family_of(architecture: str) -> Family:
    """The family whose Hugging Face models have this ``architectures[0]``."""
    for family in FAMILIES.values():
        if architecture in family.hf_architectures:
            return family
    known = ", ".join(a for f in FAMILIES.values() for a in f.hf_architectures)
    raise ValueError(f"no supported model family has architecture {architecture!r}; expected {known}")


def get_spec(model: str | ModelSpec | Any) -> ModelSpec:
    """Resolve a model name, a spec, or a loaded TransformerLens model to its :class:`ModelSpec`.

    Names may carry the ``google/`` prefix; ``"tiny-gemma2"`` and ``"tiny-gemma3"`` are the
    embedded test models.
    """
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, str):
        name = model.removeprefix("google/")
        for family in FAMILIES.values():
            if name in family.models:
                return family.models[name]
            if name == family.tiny_model:
                return tiny_spec(name)
        raise ValueError(f"unknown model {model!r}; expected one of: {', '.join(known_models())}")
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "d_model"):
        # HookedTransformer's config calls it original_architecture, TransformerBridge's architecture.
        architecture = getattr(cfg, "original_architecture", None) or getattr(
            cfg, "architecture", None
        )
        if architecture is None:
            raise ValueError(
                f"{type(model).__name__}.cfg names no architecture, so its family is unknown; "
                "load the model through load_model/hooked_from_hf or pass a model name"
            )
        family = family_of(architecture).name
        hf_config = getattr(getattr(model, "original_model", None), "config", None)
        if hf_config is not None:  # a TransformerBridge: its cfg has no attention scale (-1)
            return spec_from_hf_config(hf_config.to_dict(), str(cfg.model_name), family)
        return ModelSpec.from_tl_config(cfg, family=family)
    raise ValueError(
        f"cannot read a model spec from {type(model).__name__}; expected a model name, "
        "a ModelSpec, or a TransformerLens model with a .cfg"
    )
