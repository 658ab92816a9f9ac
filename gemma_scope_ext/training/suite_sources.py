"""Where a suite's activations come from: its cache or the live model, split into data streams.

Stream ``s`` of ``n`` reads every ``n``-th cache shard (``s, s + n, ...``) or every ``n``-th forward
batch of token rows, so streams never share a token; with one stream it reads everything.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from gemma_scope_ext.activations.buffer import ChunkSource
from gemma_scope_ext.activations.live import LiveSource
from gemma_scope_ext.training.suite_config import SuiteConfig

__all__ = ["default_source", "special_token_ids", "stream_seed", "stream_sources", "suite_tokens"]


def special_token_ids(tokenizer: Any) -> list[int]:
    """BOS, EOS and pad ids of ``tokenizer`` (the tokens Gemma Scope left out)."""
    ids = (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    return sorted({int(i) for i in ids if i is not None})


def suite_tokens(spec: str, tokenizer: Any, n_tokens: int, context_size: int) -> torch.Tensor:
    """Token rows for ``n_tokens`` training tokens: built-in text or a token file.

    The built-in text gets half as many rows again, so that dropped special tokens and the rows
    left over from whole forward batches never make the stream cycle within the budget.
    """
    rows = math.ceil(1.5 * n_tokens / (context_size - 1)) + 8
    path = Path(spec)
    if path.is_file():
        from safetensors.torch import load_file

        tokens = load_file(path)["tokens"] if path.suffix == ".safetensors" else torch.load(path)
        if tokens.ndim != 2 or tokens.dtype.is_floating_point:
            raise ValueError(f"{path} must hold integer token rows [rows, ctx] named 'tokens'")
        return tokens.long()
    name, _, split = spec.partition(":")
    if name != "docstrings":
        raise ValueError(f"dataset {spec!r}: expected docstrings[:train|eval] or a token file "
                         "(.safetensors with 'tokens', or .pt)")  # fmt: skip
    from gemma_scope_ext.models.text import sample_tokens

    return sample_tokens(tokenizer, rows, context_size, split or "train")  # type: ignore[arg-type]


def stream_seed(seed: int, stream: int) -> int:
    """Seed of stream ``stream``'s mixing buffer and shard order (stream 0 keeps the suite's)."""
    return seed + 1_000_033 * stream


def stream_sources(cfg: SuiteConfig, model: Any, hooks: list[str], streams: range,
                   n_streams: int) -> dict[int, ChunkSource]:  # fmt: skip
    """A source for each of ``streams`` (of ``n_streams``): the cache at ``cfg.cache_path``
    (no model needed), else the model run live on that stream's share of the token rows."""
    if cfg.cache_path is not None:
        from gemma_scope_ext.activations.cache_format import read_cache_manifest
        from gemma_scope_ext.activations.reader import CacheSource

        n_shards = len(read_cache_manifest(cfg.cache_path)["shards"])
        if n_shards < n_streams:
            raise ValueError(f"the cache at {cfg.cache_path} has {n_shards} shards, fewer than the "
                             f"{n_streams} data streams that each need their own: harvest with "
                             "fewer rows per shard, or use fewer streams")  # fmt: skip
        return {s: CacheSource(cfg.cache_path, hooks, model_name=cfg.model_name,
                               seed=stream_seed(cfg.seed, s), widths=cfg.hook_widths(),
                               dtype=getattr(torch, cfg.dtype), shuffle=cfg.shuffle_shards,
                               shards=range(s, n_shards, n_streams)) for s in streams}  # fmt: skip
    if model is None:
        from gemma_scope_ext.models.loading import load_model

        model = load_model(cfg.model_name, device=cfg.device)
    special = special_token_ids(model.tokenizer) if cfg.exclude_special_tokens else []
    tokens = suite_tokens(cfg.dataset, model.tokenizer,
                          max(cfg.entry_tokens(e) for e in cfg.entries), cfg.context_size)  # fmt: skip
    rows = cfg.store_batch_size_prompts
    n_batches = len(tokens) // rows
    if n_batches < n_streams:
        raise ValueError(f"{len(tokens)} token rows make {n_batches} forward batches of {rows}, "
                         f"fewer than the {n_streams} data streams that each need their own")  # fmt: skip
    out: dict[int, ChunkSource] = {}
    for s in streams:
        batches = torch.arange(s, n_batches, n_streams)
        share = tokens[(batches[:, None] * rows + torch.arange(rows)).reshape(-1)]
        out[s] = LiveSource(model, share, hooks, rows, special, getattr(torch, cfg.dtype))
    return out


def default_source(cfg: SuiteConfig, model: Any, hooks: list[str]) -> ChunkSource:
    """The one source of a single-stream suite: its cache, or the model run live."""
    return stream_sources(cfg, model, hooks, range(1), 1)[0]
