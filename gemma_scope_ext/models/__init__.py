"""Model families as data (sizes, Gemma Scope's sites), loading them into TransformerLens, built-in text."""

from gemma_scope_ext.models.families import (
    FAMILIES,
    family_of,
    get_family,
    get_spec,
    known_models,
    tiny_dir,
    tiny_spec,
)
from gemma_scope_ext.models.gemma2 import GEMMA2_MODELS, TINY_MODEL_NAME
from gemma_scope_ext.models.gemma3 import GEMMA3_MODELS
from gemma_scope_ext.models.loading import (
    hooked_from_hf,
    load_gemma2,
    load_gemma3,
    load_model,
    tiny_gemma2,
    tiny_gemma2_hf,
    tiny_gemma3,
    tiny_gemma3_hf,
    tiny_model,
    tiny_model_hf,
    tiny_tokenizer,
)
from gemma_scope_ext.models.mlp_hooks import add_mlp_input_hooks
from gemma_scope_ext.models.sites import (
    SITES,
    get_site,
    hook_name,
    hook_name_out,
    site_d_in,
    site_d_out,
)
from gemma_scope_ext.models.spec import Family, Gemma2Spec, ModelSpec, Site
from gemma_scope_ext.models.text import sample_texts, sample_tokens

__all__ = [
    "FAMILIES",
    "GEMMA2_MODELS",
    "GEMMA3_MODELS",
    "SITES",
    "TINY_MODEL_NAME",
    "Family",
    "Gemma2Spec",
    "ModelSpec",
    "Site",
    "add_mlp_input_hooks",
    "family_of",
    "get_family",
    "get_site",
    "get_spec",
    "hook_name",
    "hook_name_out",
    "hooked_from_hf",
    "known_models",
    "load_gemma2",
    "load_gemma3",
    "load_model",
    "sample_texts",
    "sample_tokens",
    "site_d_in",
    "site_d_out",
    "tiny_dir",
    "tiny_gemma2",
    "tiny_gemma2_hf",
    "tiny_gemma3",
    "tiny_gemma3_hf",
    "tiny_model",
    "tiny_model_hf",
    "tiny_spec",
    "tiny_tokenizer",
]
