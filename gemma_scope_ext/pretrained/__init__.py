"""Every released Gemma Scope SAE and transcoder: the catalog, the loader, and the SAELens route."""

from gemma_scope_ext.pretrained.cache import cache_path, cache_root
from gemma_scope_ext.pretrained.catalog import (
    CatalogEntry,
    Release,
    UnknownSAEError,
    expected_shapes,
    get_entry,
    get_release,
    list_releases,
)
from gemma_scope_ext.pretrained.hub import download_params
from gemma_scope_ext.pretrained.loader import (
    ParamsFileError,
    build_sae,
    from_pretrained,
    load_params,
    read_params_npz,
)
from gemma_scope_ext.pretrained.query import find_saes, why_empty
from gemma_scope_ext.pretrained.sae_lens_route import original_loader, register_sae_lens_route

__all__ = [
    "CatalogEntry",
    "ParamsFileError",
    "Release",
    "UnknownSAEError",
    "build_sae",
    "cache_path",
    "cache_root",
    "download_params",
    "expected_shapes",
    "find_saes",
    "from_pretrained",
    "get_entry",
    "get_release",
    "list_releases",
    "load_params",
    "original_loader",
    "read_params_npz",
    "register_sae_lens_route",
    "why_empty",
]
