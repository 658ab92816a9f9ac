"""Checking token batches against a model before any forward pass runs on them.

TransformerLens raises an ``IndexError`` deep in the embedding for an id outside the vocabulary and
an opaque shape error for a sequence longer than the positional range; a negative id silently wraps
in some kernels. These checks say what was wrong and what was expected first.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

__all__ = ["check_finite_activations", "check_tokens"]


def check_tokens(model: Any, tokens: Any, what: str = "tokens") -> Int[Tensor, "batch pos"]:
    """``tokens`` as an integer tensor [batch, pos] whose ids and length fit ``model``."""
    tokens = torch.as_tensor(tokens)
    if tokens.ndim != 2 or tokens.dtype not in (torch.long, torch.int32, torch.int64):
        raise ValueError(
            f"{what} must be an integer tensor [n_seqs, seq_len], got {tuple(tokens.shape)} "
            f"{tokens.dtype}; tokenize with model.to_tokens or gemma_scope_ext.sample_tokens"
        )
    if tokens.numel() == 0:
        raise ValueError(f"{what} is empty (shape {tuple(tokens.shape)}); pass at least one row")
    cfg = model.cfg
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= cfg.d_vocab:
        raise ValueError(
            f"{what} hold ids from {lo} to {hi}, but the model's vocabulary is 0..{cfg.d_vocab - 1}; "
            "were they made by another tokenizer?"
        )
    if tokens.shape[1] > cfg.n_ctx:
        raise ValueError(
            f"{what} rows have {tokens.shape[1]} tokens, more than the model's context of "
            f"{cfg.n_ctx}; split them into shorter rows"
        )
    return tokens


def check_finite_activations(x: Tensor, hook: str, batch: int, what: str = "activations") -> None:
    """Raise a ValueError naming the hook and batch if ``x`` holds NaN or infinite values."""
    bad = ~torch.isfinite(x)
    if bad.any():
        raise ValueError(
            f"{what} at {hook!r} in batch {batch} hold {int(bad.sum())} NaN or infinite values of "
            f"{x.numel()}; the model or the SAE produced them (check the weights and the dtype: "
            "bf16 overflows where fp32 does not)"
        )
