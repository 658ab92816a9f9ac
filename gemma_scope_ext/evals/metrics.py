"""The Gemma Scope report's metrics for an SAE or transcoder spliced into a TransformerLens model.

Delta LM loss (cross-entropy with the reconstruction spliced in, minus clean cross-entropy), FVU
(squared error over the variance of the activations, pooled over all tokens), L0, dead and dense
latents, and, for scale, the loss with the site zero- or mean-ablated. Special tokens (BOS, EOS, pad)
enter no metric, and every splice keeps their original activation.

The next-token loss at position i is counted when token i (the one whose activation is replaced) is not
special, as in SAELens's ``run_evals``; activation metrics count every non-special position.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from gemma_scope_ext.evals.stats import EvalResult, PositionProfile, RunningStats

__all__ = ["EvalResult", "PositionProfile", "evaluate", "evaluate_many", "site_means"]

TokenSource = Tensor | Iterable[Tensor]


class _Site(NamedTuple):
    hook_in: str
    hook_out: str
    layer: int | None
    """Block holding ``hook_out`` (a spliced run can resume there), or None outside the blocks."""


_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def _block_of(hook: str) -> int | None:
    m = _BLOCK.match(hook)
    return int(m.group(1)) if m else None


def _site(sae: Any) -> _Site:
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
    return _Site(hook_in, hook_out, _block_of(hook_out))


def _flat(act: Tensor) -> Float[Tensor, "batch pos d"]:
    # hook_z and friends are [batch, pos, head, d_head]; SAEs read them flattened head-major.
    return act.flatten(2) if act.ndim == 4 else act


@contextmanager
def _flat_inputs(saes: Sequence[Any]):
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


def _encode_decode(sae: Any, x: Tensor) -> tuple[Tensor, Tensor]:
    """Latent activations and output; ``forward_with_activations`` keeps a skip connection."""
    x = x.to(sae.W_enc.device)
    if hasattr(sae, "forward_with_activations"):
        out, feats = sae.forward_with_activations(x)
        return feats, out
    feats = sae.encode(x)
    return feats, sae.decode(feats)


def _recorder(cache: dict[str, Tensor]):
    def record(act: Tensor, hook: Any) -> None:
        cache[hook.name] = act

    return record


def _token_ce(logits: Tensor, tokens: Tensor) -> Float[Tensor, "batch pos_minus_1"]:
    # fp32 log-softmax even for bf16 models: bf16 CE differences of 1e-3 nats would be noise.
    lp = logits[:, :-1].float().log_softmax(-1)
    return -lp.gather(-1, tokens[:, 1:, None].to(lp.device)).squeeze(-1)


def _resumable(model: Any) -> bool:
    from transformer_lens import HookedTransformer

    return isinstance(model, HookedTransformer)


def _run_replaced(model, tokens, cache, site: _Site, keep: Tensor, replacement: Tensor) -> Tensor:
    """Next-token CE with ``hook_out`` replaced at the kept positions (others keep their value)."""

    def hook(act: Tensor, hook: Any) -> Tensor:
        new = replacement.to(act.dtype).expand(*act.shape[:2], -1).reshape(act.shape)
        mask = keep.view(*keep.shape, *([1] * (act.ndim - 2))).to(act.device)
        return torch.where(mask, new, act)

    hooks = [(site.hook_out, hook)]
    if site.layer is not None and _resumable(model):
        # Everything before the block holding the splice is unchanged: resume from the clean
        # residual entering that block instead of recomputing it.
        mask = None
        if model.tokenizer is not None and model.tokenizer.padding_side == "left":
            from transformer_lens import utils

            mask = utils.get_attention_mask(model.tokenizer, tokens, model.cfg.default_prepend_bos)
        logits = model.run_with_hooks(
            cache[f"blocks.{site.layer}.hook_resid_pre"], start_at_layer=site.layer,
            tokens=tokens, attention_mask=mask, return_type="logits", fwd_hooks=hooks,
        )  # fmt: skip
    else:
        logits = model.run_with_hooks(tokens, return_type="logits", fwd_hooks=hooks)
    return _token_ce(logits, tokens)


def _special_ids(model: Any, special_token_ids: Sequence[int] | None) -> Tensor:
    if special_token_ids is not None:
        return torch.tensor(sorted(set(special_token_ids)), dtype=torch.long)
    if getattr(model, "tokenizer", None) is None:
        raise ValueError(
            "the model has no tokenizer to read BOS/EOS/pad ids from; pass special_token_ids="
            "[...] (the ids to exclude from every metric, BOS at least)"
        )
    from sae_lens.util import get_special_token_ids

    return torch.tensor(sorted(get_special_token_ids(model.tokenizer)), dtype=torch.long)


def _batches(tokens: TokenSource, batch_size: int) -> Iterable[Tensor]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(tokens, Tensor):
        if tokens.ndim != 2 or tokens.dtype not in (torch.long, torch.int32):
            raise ValueError(
                f"tokens must be an integer tensor [n_seqs, seq_len], got {tuple(tokens.shape)} "
                f"{tokens.dtype}; tokenize with model.to_tokens or gemma_scope_ext.sample_tokens"
            )
        return list(tokens.split(batch_size))
    parts = (part for batch in tokens for part in _batches(torch.as_tensor(batch), batch_size))
    # a list stays a list, so its progress bar knows its length
    return list(parts) if isinstance(tokens, (list, tuple)) else parts


def _progress(items: Iterable[Tensor], desc: str, show: bool):
    from tqdm.auto import tqdm

    total = len(items) if isinstance(items, list) else None
    return tqdm(items, desc=desc, total=total, disable=not show, unit="batch", leave=False)


@torch.no_grad()
def site_means(
    model: Any,
    hooks: Sequence[str],
    tokens: TokenSource,
    *,
    batch_size: int = 8,
    special_token_ids: Sequence[int] | None = None,
    progress: bool = True,
) -> dict[str, Float[Tensor, " d"]]:
    """Mean activation (float64, head-flattened) at each hook over the non-special tokens."""
    ignore = _special_ids(model, special_token_ids)
    # Stop after the last block holding a hook (0: only the embedding); run all if unknown.
    blocks = [-1 if h in ("hook_embed", "hook_pos_embed") else _block_of(h) for h in hooks]
    stop = max(blocks) + 1 if _resumable(model) and None not in blocks else None
    sums: dict[str, Tensor] = {}
    count = 0
    for batch in _progress(_batches(tokens, batch_size), "site means", progress):
        batch = batch.to(model.cfg.device)
        keep = ~torch.isin(batch, ignore.to(batch.device))
        cache: dict[str, Tensor] = {}
        model.run_with_hooks(batch, stop_at_layer=stop, return_type=None,
                             fwd_hooks=[(h, _recorder(cache)) for h in hooks])
        for h in hooks:
            s = _flat(cache[h])[keep].double().sum(0).cpu()
            sums[h] = sums[h] + s if h in sums else s
        count += int(keep.sum())
    if count == 0:
        raise ValueError("no non-special tokens to average over; check tokens and special ids")
    return {h: s / count for h, s in sums.items()}


def evaluate(
    model: Any,
    sae: Any,
    tokens: TokenSource,
    *,
    batch_size: int = 8,
    ablations: bool = True,
    means: dict[str, Tensor] | None = None,
    special_token_ids: Sequence[int] | None = None,
    dense_threshold: float = 0.1,
    progress: bool = True,
) -> EvalResult:
    """Evaluate one SAE or transcoder; see :func:`evaluate_many` for the arguments."""
    return evaluate_many(
        model, [sae], tokens, batch_size=batch_size, ablations=ablations, means=means,
        special_token_ids=special_token_ids, dense_threshold=dense_threshold, progress=progress,
    )[0]  # fmt: skip


@torch.no_grad()
def evaluate_many(
    model: Any,
    saes: Sequence[Any],
    tokens: TokenSource,
    *,
    batch_size: int = 8,
    ablations: bool = True,
    means: dict[str, Tensor] | None = None,
    special_token_ids: Sequence[int] | None = None,
    dense_threshold: float = 0.1,
    progress: bool = True,
) -> list[EvalResult]:
    """Evaluate several SAEs on the same tokens, sharing each batch's clean forward pass.

    Args:
        model: a TransformerLens model (fp32 or bf16); sums are kept in float64 either way.
        saes: SAELens-style SAEs or transcoders (``encode``/``decode``, ``cfg.metadata.hook_name``,
            and ``cfg.metadata.hook_name_out`` for transcoders).
        tokens: an integer tensor [n_seqs, seq_len], or an iterable of such batches (streamed).
        batch_size: rows per forward pass; larger iterable batches are split.
        ablations: also measure the loss with the output site zero- and mean-ablated.
        means: the mean-ablation value per output hook; when None they are computed from the
            tokens in a first pass (token ids of an iterable are then held in memory).
        special_token_ids: ids excluded from every metric; default BOS, EOS, pad of the tokenizer.
        dense_threshold: firing frequency above which a latent counts as dense.
        progress: show tqdm progress bars.
    """
    if not 0 < dense_threshold <= 1:
        raise ValueError(f"dense_threshold must be in (0, 1], got {dense_threshold}")
    if len(saes) == 0:
        raise ValueError("no SAEs to evaluate; pass at least one")
    sites = [_site(sae) for sae in saes]
    ignore = _special_ids(model, special_token_ids)
    batches = _batches(tokens, batch_size)
    outs = sorted({s.hook_out for s in sites})
    if ablations and means is None:
        batches = list(batches)  # two passes over the same token ids
        means = site_means(model, outs, batches, batch_size=batch_size,
                           special_token_ids=ignore.tolist(), progress=progress)
    if ablations and (missing := [h for h in outs if h not in means]):
        raise ValueError(f"means has no entry for {missing}; pass means for every output hook")
    stats = [RunningStats(int(sae.cfg.d_sae)) for sae in saes]
    wanted = {h for s in sites for h in (s.hook_in, s.hook_out)}
    wanted |= {f"blocks.{s.layer}.hook_resid_pre" for s in sites if s.layer is not None}
    with _flat_inputs(saes):
        for batch in _progress(batches, "evaluating", progress):
            _evaluate_batch(model, saes, sites, stats, batch, ignore, wanted,
                            means if ablations else None)
    return [
        _result(site, st, dense_threshold, ablations) for site, st in zip(sites, stats, strict=True)
    ]


def _evaluate_batch(model, saes, sites, stats, tokens, ignore, wanted, means) -> None:
    tokens = tokens.to(model.cfg.device)
    keep = ~torch.isin(tokens, ignore.to(tokens.device))  # [batch, pos]
    cache: dict[str, Tensor] = {}
    logits = model.run_with_hooks(
        tokens, return_type="logits", fwd_hooks=[(h, _recorder(cache)) for h in wanted]
    )
    clean = _token_ce(logits, tokens)
    del logits
    ablated: dict[str, tuple[Tensor, Tensor]] = {}
    for sae, site, st in zip(saes, sites, stats, strict=True):
        x, target = _flat(cache[site.hook_in]), _flat(cache[site.hook_out])
        if x.shape[-1] != sae.cfg.d_in:
            raise ValueError(
                f"{site.hook_in} gives width {x.shape[-1]} but the SAE expects d_in "
                f"{sae.cfg.d_in}; is the SAE meant for this model and hook?"
            )
        feats, recon = _encode_decode(sae, x)
        if recon.shape != target.shape:
            raise ValueError(
                f"SAE output {tuple(recon.shape)} does not fit {site.hook_out} "
                f"{tuple(target.shape)}; check d_out and hook_name_out"
            )
        spliced = _run_replaced(model, tokens, cache, site, keep, recon.to(target.device))
        if means is not None and site.hook_out not in ablated:
            zero = target.new_zeros(target.shape[-1])
            mean = means[site.hook_out].to(target.device)
            ablated[site.hook_out] = (
                _run_replaced(model, tokens, cache, site, keep, zero),
                _run_replaced(model, tokens, cache, site, keep, mean),
            )
        abl = ablated.get(site.hook_out)
        st.add(keep, target, recon, feats, clean, spliced, *(abl or (None, None)))


def _result(site: _Site, st: RunningStats, dense_threshold: float, ablations: bool) -> EvalResult:
    if st.n_tokens == 0 or st.n_loss_tokens == 0:
        raise ValueError(
            "no non-special tokens were evaluated; rows need tokens besides BOS/EOS/pad"
        )
    n, nl = st.n_tokens, st.n_loss_tokens
    return EvalResult(
        hook_name=site.hook_in, hook_name_out=site.hook_out, n_tokens=n, n_loss_tokens=nl,
        clean_loss=st.clean / nl, spliced_loss=st.spliced / nl,
        zero_ablation_loss=st.zero / nl if ablations else None,
        mean_ablation_loss=st.mean / nl if ablations else None,
        fvu=st.fvu(), mse=st.sq_err / n, l0=float((st.l0_hist * torch.arange(
            st.l0_hist.numel(), dtype=torch.float64)).sum()) / n,
        l0_histogram=st.l0_hist, latent_frequency=st.fires.double() / n,
        dense_threshold=dense_threshold, by_position=st.profile(),
    )  # fmt: skip
