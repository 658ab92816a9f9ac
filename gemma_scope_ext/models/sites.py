"""Gemma Scope sites as TransformerLens hook names and widths, for any model of a known family.

The tables are the families' (``gemma2.SITES`` for Gemma 2, ``gemma3.SITES`` for Gemma 3); these
functions pick the table of the model's family. Given a loaded model, they also check that it has
the hook (Gemma 3's transcoders read ``mlp.hook_in``, which only the package's loader adds to a
``HookedTransformer``). The names are shared by ``HookedTransformer`` and TransformerLens's
``TransformerBridge``.
"""

from __future__ import annotations

from typing import Any

from gemma_scope_ext.models.families import get_family, get_spec
from gemma_scope_ext.models.gemma2 import SITES
from gemma_scope_ext.models.mlp_hooks import check_hook_present
from gemma_scope_ext.models.spec import ModelSpec, Site

__all__ = ["SITES", "Site", "get_site", "hook_name", "hook_name_out", "site_d_in", "site_d_out"]


def get_site(model: str | ModelSpec | Any, site: str) -> Site:
    """The :class:`Site` called ``site`` on ``model``'s family."""
    sites = get_family(get_spec(model).family).sites
    if site not in sites:
        raise ValueError(f"unknown site {site!r}; expected one of: {', '.join(sites)}")
    return sites[site]


def _format(spec: ModelSpec, site: Site, template: str, layer: int | None) -> str:
    if not site.per_layer:
        if layer is not None:
            raise ValueError(f"site {site.name!r} has no layers; pass layer=None, got {layer!r}")
        return template
    if layer is None or isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"site {site.name!r} needs an integer layer, got {layer!r}")
    if not 0 <= layer < spec.n_layers:
        raise ValueError(
            f"layer {layer} out of range for {spec.name}: expected 0..{spec.n_layers - 1}"
        )
    return template.format(layer=layer)


def hook_name(model: str | ModelSpec | Any, site: str, layer: int | None = None) -> str:
    """The TransformerLens hook an SAE at ``site`` reads (for a transcoder, its input hook).

    >>> hook_name("gemma-2-2b", "res", 20)
    'blocks.20.hook_resid_post'
    """
    spec = get_spec(model)
    s = get_site(spec, site)
    return _checked(model, _format(spec, s, s.hook_in, layer))


def hook_name_out(model: str | ModelSpec | Any, site: str, layer: int | None = None) -> str:
    """The hook whose value the SAE's output stands in for (the MLP output for a transcoder)."""
    spec = get_spec(model)
    s = get_site(spec, site)
    return _checked(model, _format(spec, s, s.hook_out, layer))


def _checked(model: str | ModelSpec | Any, name: str) -> str:
    if not isinstance(model, str | ModelSpec):
        check_hook_present(model, name)
    return name


def site_d_in(model: str | ModelSpec | Any, site: str) -> int:
    """Width of the SAE input at ``site``: d_model, or n_heads * d_head for attention."""
    spec = get_spec(model)
    return spec.d_attn if get_site(spec, site).width == "d_attn" else spec.d_model


def site_d_out(model: str | ModelSpec | Any, site: str) -> int:
    """Width of the SAE output at ``site`` (equal to ``site_d_in`` at every Gemma Scope site)."""
    return site_d_in(model, site)
