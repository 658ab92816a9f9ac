"""Activations from the language model itself: one forward pass per batch of rows, for every hook.

The forward stops after the deepest block any hook lives in (TransformerLens's ``stop_at_layer``),
special tokens (BOS, EOS, pad) are dropped with one mask for every hook, and the hooks' rows are
packed side by side, ``[rows, sum of widths]``, so that a transcoder's input and target (or any
two hooks) stay row-aligned through every shuffle that follows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["LiveSource", "activations_of", "stop_layer"]

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def stop_layer(hooks: Sequence[str]) -> int:
    """``stop_at_layer`` for a forward that reaches every hook: one past the deepest block."""
    return max((int(m.group(1)) + 1 if (m := _BLOCK.match(h)) else 0) for h in hooks)


@torch.no_grad()
def activations_of(
    model, tokens: Int[Tensor, "rows ctx"], hooks: Sequence[str], special_ids: Sequence[int] = ()
) -> Float[Tensor, "kept width"]:
    """Packed ``[rows kept, sum of widths]`` activations of ``hooks``, special tokens dropped."""
    missing = [h for h in hooks if h not in model.hook_dict]
    if missing:
        raise ValueError(f"the model has no hooks {missing}; see gs.hook_name for Gemma Scope's")
    _, cache = model.run_with_cache(tokens, names_filter=list(hooks),
                                    stop_at_layer=stop_layer(hooks))  # fmt: skip
    keep = ~torch.isin(tokens, torch.tensor(list(special_ids), dtype=tokens.dtype, device=tokens.device)).reshape(-1)
    flat = [cache[h].reshape(tokens.numel(), -1) for h in hooks]
    return torch.cat(flat, dim=1)[keep.to(flat[0].device)]


class LiveSource:
    """Packed activations of token rows, ``batch_rows`` rows per forward, cycling over the rows."""

    def __init__(self, model, tokens: Int[Tensor, "rows ctx"], hooks: Sequence[str],
                 batch_rows: int, special_ids: Sequence[int] = (),
                 dtype: torch.dtype = torch.float32) -> None:  # fmt: skip
        if len(tokens) < batch_rows:
            raise ValueError(f"{len(tokens)} token rows, fewer than one batch of {batch_rows}")
        self.model, self.tokens, self.hooks = model, tokens, list(hooks)
        self.batch_rows, self.special_ids, self.dtype = batch_rows, list(special_ids), dtype
        self.n_batches = len(tokens) // batch_rows
        self.position = 0

    def next_chunk(self) -> Float[Tensor, "rows width"]:
        i = self.position % self.n_batches
        self.position += 1
        rows = self.tokens[i * self.batch_rows : (i + 1) * self.batch_rows]
        device = next(self.model.parameters()).device
        acts = activations_of(self.model, rows.to(device), self.hooks, self.special_ids)
        return acts.to(dtype=self.dtype)  # stays on the model's device

    def seek(self, position: int) -> None:
        self.position = position
