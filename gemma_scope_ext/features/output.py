"""Output-side views of latents: the tokens a decoder direction promotes and suppresses, and for
attention SAEs the share of the direction in each head.

A latent writes ``W_dec[i]`` into its output hook. Residual, MLP-output, embedding and transcoder
latents write straight into the residual stream (Gemma 2's ``hook_mlp_out`` already follows the
post-MLP RMSNorm). An attention SAE's direction lives in ``hook_z`` (heads concatenated
head-major); it reaches the residual stream through each head's ``W_O`` and, in Gemma 2, the
post-attention RMSNorm.

The direct effect on the logits is read as circuit-tracer reads its logit nodes: every RMSNorm
scale frozen (so ``1 / rms`` is a positive constant that rescales all tokens alike and is left out),
every RMSNorm gain applied (the final norm's ``ln_final.w``, which TransformerLens already holds as
Gemma's ``1 + w``, and for attention the post-attention norm's ``ln1_post.w``: the gains reweight
dimensions and do change which tokens win), and the final logit soft-cap (``30 tanh(l / 30)``)
left out: it acts on each token's total logit, is monotone, and has no context-free effect of a
direction to report. So a latent's score for token ``t`` is ``sum_j d_j g_j W_U[j, t]``, the
pre-cap logit change per unit of ``1 / rms`` of the final residual. This matches Neuronpedia's
``W_dec @ W_U`` on a model whose final norm gain is folded into ``W_U``.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from gemma_scope_ext.models.backend import norm_gain

__all__ = ["OutputView", "head_norms", "logit_effects", "output_view", "residual_directions"]

_HOOK_Z = re.compile(r"^blocks\.(\d+)\.attn\.hook_z$")


class OutputView(NamedTuple):
    """Promoted and suppressed tokens per latent (largest and smallest scores), and head norms."""

    promoted_ids: Int[Tensor, "d_sae n"]
    """Token ids with the largest scores, best first."""
    promoted_values: Float[Tensor, "d_sae n"]
    """Their scores (pre-soft-cap logit change; see the module docstring)."""
    suppressed_ids: Int[Tensor, "d_sae n"]
    """Token ids with the smallest scores, most negative first."""
    suppressed_values: Float[Tensor, "d_sae n"]
    """Their scores."""
    head_norms: Float[Tensor, "d_sae n_heads"] | None
    """For attention SAEs, the norm of each head's slice of ``W_dec[i]``; else None."""


def head_norms(sae: Any, n_heads: int) -> Float[Tensor, "d_sae n_heads"]:
    """Norm of each head's slice of every decoder row (hook_z is flattened head-major)."""
    w = sae.W_dec.detach().float()
    return w.view(w.shape[0], n_heads, -1).norm(dim=-1)


def residual_directions(model: Any, sae: Any, hook_out: str) -> Float[Tensor, "d_sae d_model"] | None:
    """Each latent's decoder direction as written into the residual stream, or None if unknown.

    Frozen-scale reading: for ``attn.hook_z`` the direction goes through ``W_O`` and the
    post-attention RMSNorm gain where the model has one; any other output of width d_model is
    taken to be a residual-stream direction.
    """
    w = sae.W_dec.detach().float()
    match = _HOOK_Z.match(hook_out)
    if match:
        block = model.blocks[int(match.group(1))]
        w_o = block.attn.W_O.detach().float()  # [n_heads, d_head, d_model]
        out = torch.einsum("shd,hdm->sm", w.view(w.shape[0], *w_o.shape[:2]), w_o.to(w.device))
        # Gemma's post-attention RMSNorm (HookedTransformer builds ln1_post only where it exists).
        post = getattr(block, "ln1_post", None)
        if post is not None and (gain := norm_gain(model, post)) is not None:
            out = out * gain.detach().float().to(w.device)
        return out
    if w.shape[1] == model.cfg.d_model:
        return w
    return None


@torch.no_grad()
def logit_effects(
    model: Any, directions: Float[Tensor, "d_sae d_model"], n: int, chunk_elements: int = 1 << 25
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top-``n`` and bottom-``n`` tokens of ``(directions * ln_final.w) @ W_U``, chunked by latent."""
    w_u = model.W_U.detach()
    final = getattr(model, "ln_final", None)
    gain = None if final is None else norm_gain(model, final)
    d = directions.to(w_u.device, torch.float32)
    if gain is not None:
        d = d * gain.detach().float()
    w_u = w_u.float()
    n = min(n, w_u.shape[1])
    step = max(1, chunk_elements // w_u.shape[1])
    parts: list[tuple[Tensor, ...]] = []
    for start in range(0, d.shape[0], step):
        scores = d[start : start + step] @ w_u
        top, bottom = scores.topk(n, dim=1), scores.topk(n, dim=1, largest=False)
        parts.append((top.indices, top.values, bottom.indices, bottom.values))
    return tuple(torch.cat(p).cpu() for p in zip(*parts, strict=True))  # type: ignore[return-value]


def output_view(model: Any, sae: Any, hook_out: str, n: int) -> OutputView | None:
    """Promoted/suppressed tokens (and head norms for attention SAEs) of every latent of ``sae``."""
    directions = residual_directions(model, sae, hook_out)
    if directions is None or n == 0:
        return None
    heads = head_norms(sae, model.cfg.n_heads).cpu() if _HOOK_Z.match(hook_out) else None
    return OutputView(*logit_effects(model, directions, n), heads)
