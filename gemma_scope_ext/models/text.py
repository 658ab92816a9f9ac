"""The built-in text: Python standard-library docstrings (PSF licence), shipped with the package.

The embedded tiny models were trained on the ``train`` split; ``eval`` is held out. Used by the demo,
tutorials, tests and ``gemma-scope eval`` when no Hugging Face dataset can be downloaded.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from importlib.resources import files
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor

__all__ = ["SPLITS", "check_split", "sample_texts", "sample_tokens"]

Split = Literal["train", "eval"]


@lru_cache(maxsize=2)
def _load(split: Split) -> tuple[str, ...]:
    raw = (files("gemma_scope_ext.models") / "data" / "docstrings.jsonl.gz").read_bytes()
    rows = (json.loads(line) for line in gzip.decompress(raw).decode("utf-8").splitlines())
    return tuple(r["text"] for r in rows if r["split"] == split)


SPLITS: tuple[Split, ...] = ("train", "eval")
"""The built-in text's splits: the tiny models trained on ``train``; ``eval`` is held out."""


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} of the built-in text; expected one of: "
                         f"{', '.join(SPLITS)}")


def sample_texts(split: Split = "eval", n: int | None = None) -> list[str]:
    """The first ``n`` documents (all when None) of a split, in a fixed order."""
    check_split(split)
    texts = _load(split)
    return list(texts if n is None else texts[:n])


def sample_tokens(
    tokenizer, n_seqs: int, seq_len: int, split: Split = "eval"
) -> Int[Tensor, "n_seqs seq_len"]:
    """``n_seqs`` rows of ``seq_len`` tokens: documents packed end to end (EOS between them), each
    row starting with BOS, as SAELens's activation store builds its batches."""
    check_split(split)
    if n_seqs < 1 or seq_len < 2:
        raise ValueError(f"need n_seqs >= 1 and seq_len >= 2, got {n_seqs} and {seq_len}")
    body = seq_len - 1
    ids: list[int] = []
    for text in _load(split):
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
        if len(ids) >= n_seqs * body:
            break
    if len(ids) < n_seqs * body:
        raise ValueError(
            f"the {split} split holds {len(ids)} tokens, fewer than {n_seqs} x {body} asked for"
        )
    rows = torch.tensor(ids[: n_seqs * body]).view(n_seqs, body)
    return torch.cat([torch.full((n_seqs, 1), tokenizer.bos_token_id), rows], dim=1)
