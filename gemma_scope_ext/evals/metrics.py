"""The Gemma Scope report's metrics for an SAE or transcoder spliced into a TransformerLens model.

Delta LM loss (cross-entropy with the reconstruction spliced in, minus clean cross-entropy), FVU
(squared error over the variance of the activations, pooled over all tokens), L0, dead and dense
latents, and, for scale, the loss with the site zero- or mean-ablated. Special tokens (BOS, EOS, pad)
enter no metric, and every splice keeps their original activation.

The next-token loss at position i is counted when token i (the one whose activation is replaced) is not
special, as in SAELens's ``run_evals``; activation metrics count every non-special position.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from gemma_scope_ext.evals.passes import (
    SaeSite,
    block_of,
    encode_decode,
    flat,
    flat_inputs,
    recording,
    resumable,
    run_replaced,
    sae_site,
    token_ce,
)
from gemma_scope_ext.evals.stats import EvalResult, PositionProfile, RunningStats
from gemma_scope_ext.models.inputs import check_finite_activations, check_tokens

__all__ = [
    "EvalResult",
    "PositionProfile",
    "evaluate",
    "evaluate_many",
    "site_means",
    "special_ids",
]

TokenSource = Tensor | Iterable[Tensor]


def special_ids(model: Any, special_token_ids: Sequence[int] | None) -> Tensor:
    if special_token_ids is not None:
        return torch.tensor(sorted(set(special_token_ids)), dtype=torch.long)
    if getattr(model, "tokenizer", None) is None:
        raise ValueError(
            "the model has no tokenizer to read BOS/EOS/pad ids from; pass special_token_ids="
            "[...] (the ids to exclude from every metric, BOS at least)"
        )
    from sae_lens.util import get_special_token_ids

    return torch.tensor(sorted(get_special_token_ids(model.tokenizer)), dtype=torch.long)


def _batches(tokens: TokenSource, batch_size: int, model: Any) -> Iterable[Tensor]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(tokens, Tensor):
        return list(check_tokens(model, tokens).split(batch_size))
    parts = (p for batch in tokens for p in _batches(torch.as_tensor(batch), batch_size, model))
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
    ignore = special_ids(model, special_token_ids)
    # Stop after the last block holding a hook (0: only the embedding); run all if unknown.
    blocks = [-1 if h in ("hook_embed", "hook_pos_embed") else block_of(h) for h in hooks]
    stop = max(blocks) + 1 if resumable(model) and None not in blocks else None
    sums: dict[str, Tensor] = {}
    count = 0
    for batch in _progress(_batches(tokens, batch_size, model), "site means", progress):
        batch = batch.to(model.cfg.device)
        keep = ~torch.isin(batch, ignore.to(batch.device))
        cache: dict[str, Tensor] = {}
        model.run_with_hooks(batch, stop_at_layer=stop, return_type=None,
                             fwd_hooks=recording(cache, hooks))
        for h in hooks:
            s = flat(cache[h])[keep].double().sum(0).cpu()
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
    sites = [sae_site(sae) for sae in saes]
    ignore = special_ids(model, special_token_ids)
    _check_hooks(model, saes, sites)
    batches = _batches(tokens, batch_size, model)
    outs = sorted({s.hook_out for s in sites})
    if ablations and means is None:
        batches = list(batches)  # two passes over the same token ids
        means = site_means(model, outs, batches, batch_size=batch_size,
                           special_token_ids=ignore.tolist(), progress=progress)
    if ablations:
        _check_means(means, saes, sites)
    stats = [RunningStats(int(sae.cfg.d_sae)) for sae in saes]
    wanted = {h for s in sites for h in (s.hook_in, s.hook_out)}
    wanted |= {f"blocks.{s.layer}.hook_resid_pre" for s in sites if s.layer is not None}
    with flat_inputs(saes):
        for i, batch in enumerate(_progress(batches, "evaluating", progress)):
            _evaluate_batch(model, saes, sites, stats, batch, ignore, wanted,
                            means if ablations else None, i)
    return [
        _result(site, st, dense_threshold, ablations) for site, st in zip(sites, stats, strict=True)
    ]


def _check_hooks(model: Any, saes: Sequence[Any], sites: Sequence[SaeSite]) -> None:
    """Every hook exists and has the SAE's widths, read off a two-token probe pass."""
    for sae, site in zip(saes, sites, strict=True):
        for hook in dict.fromkeys((site.hook_in, site.hook_out)):
            if hook not in model.hook_dict:
                raise ValueError(
                    f"{type(sae).__name__} reads or writes {hook!r}, which this model has no hook "
                    f"for (it has {model.cfg.n_layers} layers); is the SAE meant for this model?"
                )
        for name, param in sae.named_parameters():
            if not torch.isfinite(param).all():
                raise ValueError(
                    f"{type(sae).__name__} at {site.hook_in!r} has NaN or infinite values in "
                    f"{name}; its outputs would be garbage (NaN thresholds silently give L0 0)"
                )
    seen: dict[str, Tensor] = {}
    probe = torch.zeros((1, 2), dtype=torch.long, device=model.cfg.device)
    hooks = {h for s in sites for h in (s.hook_in, s.hook_out)}
    model.run_with_hooks(probe, return_type=None, fwd_hooks=recording(seen, hooks))
    for sae, site in zip(saes, sites, strict=True):
        d_out = int(getattr(sae.cfg, "d_out", None) or sae.cfg.d_in)
        for hook, width, what in ((site.hook_in, sae.cfg.d_in, "d_in"),
                                  (site.hook_out, d_out, "d_out")):
            if flat(seen[hook]).shape[-1] != width:
                raise ValueError(
                    f"{hook} gives width {flat(seen[hook]).shape[-1]} but the SAE expects {what} "
                    f"{width}; is the SAE meant for this model and hook?"
                )


def _check_means(means: dict[str, Tensor], saes: Sequence[Any], sites: Sequence[SaeSite]) -> None:
    for sae, site in zip(saes, sites, strict=True):
        if site.hook_out not in means:
            raise ValueError(f"means has no entry for {site.hook_out!r}; pass one per output hook")
        width = int(getattr(sae.cfg, "d_out", None) or sae.cfg.d_in)
        if tuple(means[site.hook_out].shape) != (width,):
            raise ValueError(
                f"means[{site.hook_out!r}] has shape {tuple(means[site.hook_out].shape)}, expected "
                f"({width},): one value per (head-flattened) dimension of the output hook"
            )


def _evaluate_batch(model, saes, sites, stats, tokens, ignore, wanted, means, index) -> None:
    tokens = tokens.to(model.cfg.device)
    keep = ~torch.isin(tokens, ignore.to(tokens.device))  # [batch, pos]
    cache: dict[str, Tensor] = {}
    logits = model.run_with_hooks(
        tokens, return_type="logits", fwd_hooks=recording(cache, wanted)
    )
    clean = token_ce(logits, tokens)
    del logits
    ablated: dict[str, tuple[Tensor, Tensor]] = {}
    for sae, site, st in zip(saes, sites, stats, strict=True):
        x, target = flat(cache[site.hook_in]), flat(cache[site.hook_out])
        if x.shape[-1] != sae.cfg.d_in:
            raise ValueError(
                f"{site.hook_in} gives width {x.shape[-1]} but the SAE expects d_in "
                f"{sae.cfg.d_in}; is the SAE meant for this model and hook?"
            )
        check_finite_activations(x, site.hook_in, index)
        feats, recon = encode_decode(sae, x)
        check_finite_activations(recon, site.hook_out, index, f"{type(sae).__name__} outputs")
        if recon.shape != target.shape:
            raise ValueError(
                f"SAE output {tuple(recon.shape)} does not fit {site.hook_out} "
                f"{tuple(target.shape)}; check d_out and hook_name_out"
            )
        spliced = run_replaced(model, tokens, cache, site, keep, recon.to(target.device))
        if means is not None and site.hook_out not in ablated:
            zero = target.new_zeros(target.shape[-1])
            mean = means[site.hook_out].to(target.device)
            ablated[site.hook_out] = (
                run_replaced(model, tokens, cache, site, keep, zero),
                run_replaced(model, tokens, cache, site, keep, mean),
            )
        abl = ablated.get(site.hook_out)
        st.add(keep, target, recon, feats, clean, spliced, *(abl or (None, None)))


def _result(site: SaeSite, st: RunningStats, dense_threshold: float, ablations: bool) -> EvalResult:
    if st.n_tokens == 0:
        raise ValueError("no non-special tokens were evaluated; rows need tokens besides BOS/EOS/pad")
    if st.n_loss_tokens == 0:
        raise ValueError(
            f"{st.n_tokens} non-special tokens were evaluated but none is followed by a next token "
            "to predict; the loss needs rows of at least two tokens after BOS"
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
