"""Gemma 3 shapes and Gemma Scope 2's sites on it, as the Gemma Scope 2 catalog and loader read them.

The one door through which ``pretrained/`` reaches Gemma 3 model facts. Shapes come from
TransformerLens's own hard-coded Gemma 3 configs (``convert_hf_model_config``, offline), the same
numbers SAELens's ``gemma_3`` loader reads from the weight files; when ``models`` resolves a Gemma 3
name itself (``get_spec``), its answer is used instead, so nothing here is a second table of sizes.

Sites, as TransformerLens hooks (checked against Hugging Face's Gemma 3 modules on a tiny model):

* ``res``: ``blocks.{L}.hook_resid_post`` = ``model.layers.L.output``;
* ``mlp``: ``blocks.{L}.hook_mlp_out`` = ``post_feedforward_layernorm.output``;
* ``att``: ``blocks.{L}.attn.hook_z`` [b, p, head, d_head] flattened head-major =
  ``self_attn.o_proj.input`` (SAELens's loader leaves ``reshape_activations`` at "none" and fails
  on the 4-d hook);
* ``transcoder`` (with or without the affine skip): ``blocks.{L}.mlp.hook_in`` ->
  ``blocks.{L}.hook_mlp_out``. ``mlp.hook_in`` is the MLP's input after the pre-MLP RMSNorm *and its
  gain* (``pre_feedforward_layernorm.output``), which Gemma Scope 2 trained on. SAELens's loader
  names ``hook_mlp_in``: the residual before that norm, a hook that never fires unless
  ``use_hook_mlp_in`` is set.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from gemma_scope_ext.models.spec import ModelSpec, Site

__all__ = ["GEMMA3_MODELS", "SCOPE2_SITES", "gemma3_spec", "scope2_hook", "scope2_width"]

GEMMA3_MODELS = (
    "gemma-3-270m", "gemma-3-270m-it", "gemma-3-1b-pt", "gemma-3-1b-it", "gemma-3-4b-pt",
    "gemma-3-4b-it", "gemma-3-12b-pt", "gemma-3-12b-it", "gemma-3-27b-pt", "gemma-3-27b-it",
)  # fmt: skip
"""The Gemma 3 models Gemma Scope 2 covers, by TransformerLens's (and Hugging Face's) names."""

SCOPE2_SITES: dict[str, Site] = {
    s.name: s
    for s in (
        Site("res", "blocks.{layer}.hook_resid_post", "blocks.{layer}.hook_resid_post",
             "d_model", True, "residual stream after the block"),
        Site("mlp", "blocks.{layer}.hook_mlp_out", "blocks.{layer}.hook_mlp_out",
             "d_model", True, "MLP output after the post-MLP RMSNorm"),
        Site("att", "blocks.{layer}.attn.hook_z", "blocks.{layer}.attn.hook_z",
             "d_attn", True, "concatenated head outputs before o_proj"),
        # The MLP's real input: after the pre-MLP RMSNorm and its gain (not folded, unlike
        # Gemma Scope 1's transcoders).
        Site("transcoder", "blocks.{layer}.mlp.hook_in", "blocks.{layer}.hook_mlp_out",
             "d_model", True, "MLP input after the pre-MLP RMSNorm and gain -> MLP output"),
    )
}  # fmt: skip
"""Gemma Scope 2's sites on Gemma 3 and the TransformerLens hook that carries each one."""


@cache
def gemma3_spec(model: str) -> ModelSpec:
    """Shapes of a Gemma 3 model (``"gemma-3-1b-pt"``, with or without ``google/``)."""
    from gemma_scope_ext.models.families import get_spec

    name = model.removeprefix("google/")
    if name not in GEMMA3_MODELS:
        raise ValueError(f"unknown Gemma 3 model {model!r}; expected one of: {', '.join(GEMMA3_MODELS)}")
    try:
        return get_spec(name)
    except ValueError:
        pass  # models does not know Gemma 3 by name: read TransformerLens's table
    from transformer_lens.loading_from_pretrained import convert_hf_model_config

    c: dict[str, Any] = convert_hf_model_config(f"google/{name}")
    return ModelSpec(
        name=name, d_model=c["d_model"], n_layers=c["n_layers"], n_heads=c["n_heads"],
        d_head=c["d_head"], n_key_value_heads=c["n_key_value_heads"], d_mlp=c["d_mlp"],
        attn_scale=float(c.get("attn_scale", c["d_head"] ** 0.5)), d_vocab=c["d_vocab"],
        family="gemma3", n_ctx=c["n_ctx"],
    )  # fmt: skip


def _site(site: str) -> Site:
    if site not in SCOPE2_SITES:
        raise ValueError(
            f"unknown Gemma Scope 2 site {site!r}; expected one of: {', '.join(SCOPE2_SITES)}"
        )
    return SCOPE2_SITES[site]


def scope2_hook(model: str, site: str, layer: int, out: bool = False) -> str:
    """The hook a Gemma Scope 2 SAE at ``site`` reads (``out``: the hook its output replaces)."""
    n_layers = gemma3_spec(model).n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer!r} out of range for {model}: expected 0..{n_layers - 1}")
    s = _site(site)
    return (s.hook_out if out else s.hook_in).format(layer=layer)


def scope2_width(model: str, site: str) -> int:
    """Input (and output) width of a Gemma Scope 2 SAE at ``site``: d_model, or n_heads * d_head."""
    spec = gemma3_spec(model)
    return spec.d_attn if _site(site).width == "d_attn" else spec.d_model
