"""Running a model with one site replaced: where an SAE reads and writes, and the spliced pass.

Shared by the metrics and anything else that evaluates a splice. Activations at ``hook_z`` are
handed to SAEs flattened head-major, and a pass whose replacement sits in a block resumes from the
clean residual entering that block (everything before it is unchanged) on a HookedTransformer; a
TransformerBridge cannot resume and runs the whole forward, with the same result.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from gemma_scope_ext.models.backend import check_writable, hooks_by_name, run_from_block

__all__ = [
    "SaeSite",
    "block_of",
    "encode_decode",
    "flat",
    "flat_inputs",
    "recording",
    "resumable",
    "run_replaced",
    "sae_site",
    "token_ce",
]


class SaeSite(NamedTuple):
    """Where an SAE reads (``hook_in``) and what it replaces (``hook_out``)."""

    hook_in: str
    """TransformerLens hook the SAE reads (``cfg.metadata.hook_name``)."""
    hook_out: str
    """Hook its output replaces (``hook_name_out`` for a transcoder, else ``hook_in``)."""
    layer: int | None
    """Block holding ``hook_out`` (a spliced run can resume there), or None outside the blocks."""


_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def block_of(hook: str) -> int | None:
    m = _BLOCK.match(hook)
    return int(m.group(1)) if m else None


def sae_site(sae: Any) -> SaeSite:
    meta = sae.cfg.metadata
    hook_in = meta.get("hook_name") if hasattr(meta, "get") else getattr(meta, "hook_name", None)
    if not hook_in:
        raise ValueError(
            f"{type(sae).__name__} has no cfg.metadata.hook_name; set it to the TransformerLens "
            "hook the SAE reads (e.g. 'blocks.12.hook_resid_post')"
        )
    hook_out = getattr(meta, "hook_name_out", None) or hook_in
    if hasattr(sae.cfg, "d_out") and hook_out == hook_in:
        raise ValueError(
            f"transcoder {type(sae).__name__} reading {hook_in!r} has no "
            "cfg.metadata.hook_name_out; set it to the hook its output replaces (for Gemma Scope "
            "transcoders 'blocks.{L}.hook_mlp_out'), otherwise the splice would land on its input"
        )
    return SaeSite(hook_in, hook_out, block_of(hook_out))


def flat(act: Tensor) -> Float[Tensor, "batch pos d"]:
    # hook_z and friends are [batch, pos, head, d_head]; SAEs read them flattened head-major.
    return act.flatten(2) if act.ndim == 4 else act


@contextmanager
def flat_inputs(saes: Sequence[Any]):
    """Turn off SAELens's own hook_z reshaping while we hand SAEs flattened inputs."""
    previous = [getattr(s, "hook_z_reshaping_mode", False) for s in saes]
    for sae, on in zip(saes, previous, strict=True):
        if on:
            sae.turn_off_forward_pass_hook_z_reshaping()
    try:
        yield
    finally:
        for sae, on in zip(saes, previous, strict=True):
            if on:
                sae.turn_on_forward_pass_hook_z_reshaping()


def encode_decode(sae: Any, x: Tensor) -> tuple[Tensor, Tensor]:
    """Latent activations and output; ``forward_with_activations`` keeps a skip connection."""
    x = x.to(sae.W_enc.device)
    if hasattr(sae, "forward_with_activations"):
        out, feats = sae.forward_with_activations(x)
        return feats, out
    feats = sae.encode(x)
    return feats, sae.decode(feats)


def recording(cache: dict[str, Tensor], hooks: Iterable[str]) -> list[tuple[str, Any]]:
    """Forward hooks that store each hook's activation in ``cache`` under the name asked for.

    Keyed by the requested name, not ``hook.name``: a TransformerBridge reports internal names.
    """

    def record(act: Tensor, hook: Any, name: str) -> None:
        cache[name] = act

    return hooks_by_name(hooks, record)


def token_ce(logits: Tensor, tokens: Tensor) -> Float[Tensor, "batch pos_minus_1"]:
    # fp32 log-softmax even for bf16 models: bf16 CE differences of 1e-3 nats would be noise.
    lp = logits[:, :-1].float().log_softmax(-1)
    return -lp.gather(-1, tokens[:, 1:, None].to(lp.device)).squeeze(-1)


def resumable(model: Any) -> bool:
    """Whether ``model`` runs block by block (``stop_at_layer``): both TransformerLens model kinds."""
    return hasattr(model, "blocks") and hasattr(model, "hook_dict")


def run_replaced(model, tokens, cache, site: SaeSite, keep: Tensor, replacement: Tensor) -> Tensor:
    """Next-token CE with ``hook_out`` replaced at the kept positions (others keep their value)."""
    check_writable(model, site.hook_out)

    def hook(act: Tensor, hook: Any) -> Tensor:
        new = replacement.to(act.dtype).expand(*act.shape[:2], -1).reshape(act.shape)
        mask = keep.view(*keep.shape, *([1] * (act.ndim - 2))).to(act.device)
        return torch.where(mask, new, act)

    hooks = [(site.hook_out, hook)]
    if site.layer is not None and resumable(model):
        # Everything before the block holding the splice is unchanged: resume from the clean
        # residual entering that block where the model can, instead of recomputing it.
        resid_pre = f"blocks.{site.layer}.hook_resid_pre"
        logits = run_from_block(model, tokens, lambda: cache[resid_pre], site.layer, hooks)
    else:
        logits = model.run_with_hooks(tokens, return_type="logits", fwd_hooks=hooks)
    return token_ce(logits, tokens)
