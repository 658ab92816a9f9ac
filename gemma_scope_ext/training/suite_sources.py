"""The activation source a suite trains from when none is given: its cache, or the live model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from gemma_scope_ext.activations.buffer import ChunkSource
from gemma_scope_ext.activations.live import LiveSource
from gemma_scope_ext.training.suite_config import SuiteConfig

__all__ = ["default_source", "special_token_ids", "suite_tokens"]


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


def default_source(cfg: SuiteConfig, model: Any, hooks: list[str]) -> ChunkSource:
    """The cache at ``cfg.cache_path`` (no model needed), else the model run live."""
    if cfg.cache_path is not None:
        from gemma_scope_ext.activations.reader import CacheSource

        return CacheSource(cfg.cache_path, hooks, model_name=cfg.model_name, seed=cfg.seed,
                           widths=cfg.hook_widths(), dtype=getattr(torch, cfg.dtype),
                           shuffle=cfg.shuffle_shards)  # fmt: skip
    if model is None:
        from gemma_scope_ext.models.loading import load_model

        model = load_model(cfg.model_name, device=cfg.device)
    special = special_token_ids(model.tokenizer) if cfg.exclude_special_tokens else []
    tokens = suite_tokens(cfg.dataset, model.tokenizer,
                          max(cfg.entry_tokens(e) for e in cfg.entries), cfg.context_size)  # fmt: skip
    return LiveSource(model, tokens, hooks, cfg.store_batch_size_prompts, special,
                      getattr(torch, cfg.dtype))  # fmt: skip
