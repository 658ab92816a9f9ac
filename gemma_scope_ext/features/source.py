"""Token sources for a feature pass, streamed in batches of rows.

- ``docstrings[:eval|train]``: the built-in text (offline), packed as ``sample_tokens`` packs it;
- a token file (``.npy``, ``.pt`` or ``.safetensors`` holding an integer [rows, seq_len] array),
  read row block by row block (``.npy`` memory-mapped);
- any other name: a Hugging Face dataset with a ``text`` column, streamed and packed end to end
  (EOS between documents, BOS first in every row), so no more than one batch is ever held.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["BUILTIN", "TokenStream", "pack_rows", "token_stream"]

BUILTIN = "docstrings"


class TokenStream(NamedTuple):
    """Batches of token rows and how many rows they hold in all."""

    batches: Iterable[Tensor]
    """Integer tensors [<= batch_size, seq_len]."""
    n_rows: int
    """Rows over all batches."""


def pack_rows(tokenizer: Any, texts: Iterable[str], seq_len: int, n_rows: int,
              batch_size: int) -> Iterator[Tensor]:  # fmt: skip
    """Documents packed end to end (EOS after each), ``seq_len - 1`` tokens a row after a BOS."""
    body, ids, done = seq_len - 1, [], 0
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
        while len(ids) >= batch_size * body or (done + len(ids) // body >= n_rows):
            take = min(batch_size, n_rows - done, len(ids) // body)
            rows = torch.tensor(ids[: take * body]).view(take, body)
            del ids[: take * body]
            yield torch.cat([torch.full((take, 1), tokenizer.bos_token_id), rows], dim=1)
            done += take
            if done == n_rows:
                return
    raise ValueError(f"the dataset ran out after {done} of {n_rows} rows of {seq_len} tokens")


def _token_file(path: Path) -> Any:
    """The file's rows: a read-only memory map for .npy, a tensor otherwise."""
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r", allow_pickle=False)
    if path.suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(path)
        if len(tensors) != 1 and "tokens" not in tensors:
            raise ValueError(f"{path} holds {sorted(tensors)}; name the token array 'tokens'")
        return tensors.get("tokens", next(iter(tensors.values())))
    raise ValueError(f"token file {path} must end in .npy, .pt or .safetensors")


def _is_integer(rows: Any) -> bool:
    if isinstance(rows, np.ndarray):
        return bool(np.issubdtype(rows.dtype, np.integer))
    return not rows.dtype.is_floating_point and not rows.dtype.is_complex and rows.dtype != torch.bool


def _file_batches(rows: Any, n_rows: int, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, n_rows, batch_size):
        block = rows[start : min(start + batch_size, n_rows)]
        # a copy of the block only: the memory map itself is never loaded whole
        yield (torch.from_numpy(np.array(block)) if isinstance(block, np.ndarray) else block).long()


def token_stream(spec: str, tokenizer: Any, n_tokens: int, seq_len: int,
                 batch_size: int) -> TokenStream:  # fmt: skip
    """At least ``n_tokens`` tokens (whole rows of ``seq_len``) from ``spec``, in batches."""
    if n_tokens < 1 or seq_len < 2 or batch_size < 1:
        raise ValueError(f"need tokens >= 1, seq_len >= 2 and batch_size >= 1; got {n_tokens}, "
                         f"{seq_len}, {batch_size}")  # fmt: skip
    n_rows = math.ceil(n_tokens / seq_len)
    path = Path(spec)
    if path.is_file():
        rows = _token_file(path)
        if rows.ndim != 2 or not _is_integer(rows):
            raise ValueError(f"{path} must hold an integer array [rows, seq_len], got "
                             f"{tuple(rows.shape)} {rows.dtype}")  # fmt: skip
        if len(rows) < math.ceil(n_tokens / rows.shape[1]):
            raise ValueError(f"{path} holds {rows.shape[0] * rows.shape[1]:,} tokens, fewer than the {n_tokens:,} "
                             "asked for; pass fewer --tokens")  # fmt: skip
        n_rows = math.ceil(n_tokens / rows.shape[1])
        return TokenStream(_file_batches(rows, n_rows, batch_size), n_rows)
    name, _, split = spec.partition(":")
    if name == BUILTIN:
        from gemma_scope_ext.models.text import sample_tokens

        tokens = sample_tokens(tokenizer, n_rows, seq_len, split or "eval")  # checks the size
        return TokenStream(tokens.split(batch_size), n_rows)
    try:
        from datasets import load_dataset

        rows_iter = load_dataset(name, split=split or "train", streaming=True)
    except (ImportError, OSError, ConnectionError, ValueError) as err:
        raise RuntimeError(
            f"could not open Hugging Face dataset {name!r} ({type(err).__name__}: {err}); it needs "
            f"the `datasets` package and the hub. Offline, use {BUILTIN} or a token file"
        ) from err
    texts = (r["text"] for r in rows_iter)
    return TokenStream(pack_rows(tokenizer, texts, seq_len, n_rows, batch_size), n_rows)
