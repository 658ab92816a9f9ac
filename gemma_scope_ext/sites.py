"""Gemma Scope sites and the TransformerLens hook that carries each one: the one table of them.

Every entry was checked against the Hugging Face Gemma 2 implementation (``tests/test_sites.py``).
The names are shared by ``HookedTransformer`` and TransformerLens's ``TransformerBridge``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gemma_scope_ext.models import Gemma2Spec, get_spec

__all__ = ["SITES", "Site", "hook_name", "hook_name_out", "site_d_in", "site_d_out"]


@dataclass(frozen=True)
class Site:
    """One place in Gemma 2 where Gemma Scope trained SAEs (or transcoders)."""

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


def _site(site: str) -> Site:
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; expected one of: {', '.join(SITES)}")
    return SITES[site]


def _format(model: str | Gemma2Spec | Any, site: Site, template: str, layer: int | None) -> str:
    spec = get_spec(model)
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


def hook_name(model: str | Gemma2Spec | Any, site: str, layer: int | None = None) -> str:
    """The TransformerLens hook an SAE at ``site`` reads (for a transcoder, its input hook).

    >>> hook_name("gemma-2-2b", "res", 20)
    'blocks.20.hook_resid_post'
    """
    s = _site(site)
    return _format(model, s, s.hook_in, layer)


def hook_name_out(model: str | Gemma2Spec | Any, site: str, layer: int | None = None) -> str:
    """The hook whose value the SAE's output stands in for (the MLP output for a transcoder)."""
    s = _site(site)
    return _format(model, s, s.hook_out, layer)


def site_d_in(model: str | Gemma2Spec | Any, site: str) -> int:
    """Width of the SAE input at ``site``: d_model, or n_heads * d_head for attention."""
    spec = get_spec(model)
    return spec.d_attn if _site(site).width == "d_attn" else spec.d_model


def site_d_out(model: str | Gemma2Spec | Any, site: str) -> int:
    """Width of the SAE output at ``site`` (equal to ``site_d_in`` at every Gemma Scope site)."""
    return site_d_in(model, site)
