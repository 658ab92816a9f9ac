"""Gemma 3 shapes and Gemma Scope 2's sites on it, as the Gemma Scope 2 catalog and loader read them.

The one door through which ``pretrained/`` reaches Gemma 3 model facts; the facts themselves are
the Gemma 3 family's tables in ``models/gemma3.py`` (sizes, and the sites checked against Hugging
Face's Gemma 3 modules). A Gemma Scope 2 skip transcoder is site ``transcoder`` with
``skip=True`` in the catalog: it reads and writes the same hooks (``mlp.hook_in``, the MLP's input
after the pre-MLP RMSNorm and its gain, -> ``hook_mlp_out``).
"""

from __future__ import annotations

from gemma_scope_ext.models.families import get_spec
from gemma_scope_ext.models.gemma3 import GEMMA3_MODELS as _SPECS
from gemma_scope_ext.models.gemma3 import SITES
from gemma_scope_ext.models.sites import hook_name, hook_name_out, site_d_in
from gemma_scope_ext.models.spec import ModelSpec

__all__ = ["GEMMA3_MODELS", "gemma3_spec", "scope2_hook", "scope2_width"]

GEMMA3_MODELS = tuple(_SPECS)
"""The Gemma 3 models Gemma Scope 2 covers, by TransformerLens's (and Hugging Face's) names."""


def gemma3_spec(model: str) -> ModelSpec:
    """Shapes of a Gemma 3 model (``"gemma-3-1b-pt"``, with or without ``google/``)."""
    name = model.removeprefix("google/")
    if name not in _SPECS:
        raise ValueError(f"unknown Gemma 3 model {model!r}; expected one of: {', '.join(GEMMA3_MODELS)}")
    return get_spec(name)


def _check_site(site: str) -> None:
    if site not in SITES:
        raise ValueError(f"unknown Gemma Scope 2 site {site!r}; expected one of: {', '.join(SITES)}")


def scope2_hook(model: str, site: str, layer: int, out: bool = False) -> str:
    """The hook a Gemma Scope 2 SAE at ``site`` reads (``out``: the hook its output replaces)."""
    _check_site(site)
    spec = gemma3_spec(model)
    return (hook_name_out if out else hook_name)(spec, site, layer)


def scope2_width(model: str, site: str) -> int:
    """Input (and output) width of a Gemma Scope 2 SAE at ``site``: d_model, or n_heads * d_head."""
    _check_site(site)
    return site_d_in(gemma3_spec(model), site)
