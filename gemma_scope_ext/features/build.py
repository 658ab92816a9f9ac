"""``collect_features``: the streaming pass, the output-side views and the token texts, as
:class:`FeatureData` per SAE; ``feature_dashboards`` also writes the site."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gemma_scope_ext.circuits.splice import site_of
from gemma_scope_ext.evals.passes import sae_site
from gemma_scope_ext.features.collect import LatentRecorder, collect_latents
from gemma_scope_ext.features.config import FeatureConfig
from gemma_scope_ext.features.output import output_view
from gemma_scope_ext.features.results import FeatureData, SAEInfo
from gemma_scope_ext.features.site import write_dashboard

__all__ = ["collect_features", "feature_dashboards", "sae_info", "to_feature_data", "token_strings"]


def _meta(sae: Any, key: str) -> Any:
    meta = sae.cfg.metadata
    return meta.get(key) if hasattr(meta, "get") else getattr(meta, key, None)


def sae_info(model: Any, sae: Any, name: str | None = None) -> SAEInfo:
    """What the dashboards say about ``sae``: its hooks, site, layer, model and Neuronpedia id."""
    site = sae_site(sae)
    kind, layer = site_of(site.hook_in)
    model_name = _meta(sae, "model_name") or getattr(model.cfg, "model_name", "") or "model"
    return SAEInfo(name=name or (f"{kind}.{layer}" if layer is not None else kind),
                   hook_name=site.hook_in, hook_name_out=site.hook_out, site=kind, layer=layer,
                   model_name=str(model_name),
                   neuronpedia_id=_meta(sae, "neuronpedia_id") or None)  # fmt: skip


def token_strings(tokenizer: Any, ids: Iterable[int]) -> dict[int, str]:
    """Each id's text as the tokenizer decodes it alone (special tokens by their names)."""
    return {i: tokenizer.decode([i]) for i in sorted(set(ids)) if i >= 0}


def to_feature_data(
    rec: LatentRecorder, info: SAEInfo, output: dict[str, Tensor], tokenizer: Any = None
) -> FeatureData:
    """The recorder's state, sorted and moved to the CPU, as :class:`FeatureData`."""
    names = ("score", "value", "row", "pos", "tokens", "acts")
    top = {k: v.cpu() for k, v in zip(names, rec.top.sorted(), strict=True) if k != "score"}
    sample = {k: v.cpu() for k, v in zip(names, rec.sample.sorted(), strict=True) if k != "score"}
    ids = torch.cat([top["tokens"].flatten(), sample["tokens"].flatten(),
                     *(v.flatten() for k, v in output.items() if k.endswith("_ids"))])  # fmt: skip
    strings = token_strings(tokenizer, torch.unique(ids).tolist()) if tokenizer is not None else {}
    return FeatureData(
        info=info, config=rec.config, n_tokens=rec.n_tokens, fires=rec.fires.cpu(),
        act_sum=rec.act_sum.cpu(), hist_counts=rec.hist.counts.cpu(),
        hist_exponent=rec.hist.exponent.cpu(), top=top, sample=sample, output=output,
        token_strings=strings, special_token_ids=rec.special_token_ids,
    )  # fmt: skip


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def _batches(tokens: Tensor | Iterable[Tensor], batch_size: int) -> Iterable[Tensor]:
    if isinstance(tokens, Tensor):
        if tokens.ndim != 2:
            raise ValueError(
                f"tokens must be an integer tensor [n_seqs, seq_len], got {tuple(tokens.shape)}; "
                "tokenize with model.to_tokens or gemma_scope_ext.sample_tokens"
            )
        return tokens.split(batch_size)
    return (part for batch in tokens for part in torch.as_tensor(batch).split(batch_size))


def collect_features(
    model: Any,
    saes: Any | Sequence[Any],
    tokens: Tensor | Iterable[Tensor],
    *,
    config: FeatureConfig | None = None,
    names: Sequence[str] | None = None,
    batch_size: int = 8,
    special_token_ids: Sequence[int] | None = None,
    progress: bool = True,
    total_rows: int | None = None,
) -> list[FeatureData]:
    """Record what each SAE's latents do over ``tokens``, in one streaming pass of ``model``.

    Args:
        model: a TransformerLens model; it runs clean (the SAEs read its activations and replace
            nothing) up to the last block an SAE reads.
        saes: SAEs or transcoders (SAELens-style: ``encode``, ``W_dec``, ``cfg.metadata.hook_name``
            and, for transcoders, ``hook_name_out``), several per hook allowed.
        tokens: an integer tensor [n_seqs, seq_len] or an iterable of such batches (streamed:
            memory does not grow with the number of tokens).
        config: what to record per latent (:class:`FeatureConfig`).
        names: display names, one per SAE (default ``site.layer``).
        batch_size: rows per forward pass.
        special_token_ids: ids that never count (default BOS, EOS and pad of the tokenizer).
        progress: show a tqdm progress bar.
        total_rows: rows in an iterable ``tokens``, for the progress bar.

    Returns:
        One :class:`FeatureData` per SAE, in order.
    """
    config = config or FeatureConfig()
    saes = list(saes) if isinstance(saes, (list, tuple)) else [saes]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if names is not None and len(names) != len(saes):
        raise ValueError(f"got {len(names)} names for {len(saes)} SAEs; give one name per SAE")
    infos = [sae_info(model, sae, n) for sae, n in zip(saes, names or [None] * len(saes),
                                                         strict=True)]  # fmt: skip
    labels = _unique([i.name for i in infos])
    infos = [SAEInfo(**{**vars(i), "name": n}) for i, n in zip(infos, labels, strict=True)]
    if isinstance(tokens, Tensor) and total_rows is None:
        total_rows = len(tokens)
    recorders = collect_latents(model, saes, _batches(tokens, batch_size), config,
                                special_token_ids=special_token_ids, progress=progress,
                                total=total_rows)  # fmt: skip
    out = []
    for sae, info, rec in zip(saes, infos, recorders, strict=True):
        view = output_view(model, sae, info.hook_name_out, config.n_logits)
        output = {} if view is None else {k: v for k, v in view._asdict().items() if v is not None}
        out.append(to_feature_data(rec, info, output, getattr(model, "tokenizer", None)))
    return out


def feature_dashboards(
    model: Any,
    saes: Any | Sequence[Any],
    tokens: Tensor | Iterable[Tensor],
    out: str | os.PathLike,
    **kwargs: Any,
) -> tuple[list[FeatureData], Path]:
    """:func:`collect_features` (same keyword arguments), then :func:`write_dashboard` to ``out``.

    Returns the data and the path of the site's ``index.html``.
    """
    datas = collect_features(model, saes, tokens, **kwargs)
    return datas, write_dashboard(datas, out, progress=kwargs.get("progress", True))
