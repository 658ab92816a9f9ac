"""The breakdowns the Gemma Scope report plots: by position, by dataset, across models, across SAEs.

Each is a thin layer over :func:`gemma_scope_ext.evals.metrics.evaluate_many`; the results are named
and turn into JSON with ``to_dict`` (written atomically by :func:`write_json`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from gemma_scope_ext import files
from gemma_scope_ext.evals.metrics import EvalResult, TokenSource, evaluate, evaluate_many
from gemma_scope_ext.evals.stats import PositionProfile

__all__ = [
    "PositionBuckets",
    "SweepResult",
    "TransferResult",
    "compare_saes",
    "evaluate_datasets",
    "evaluate_transfer",
    "pareto_frontier",
    "position_buckets",
    "write_json",
]


class PositionBuckets(NamedTuple):
    """Per-position metrics pooled over ranges of positions [start, end)."""

    start: Int[Tensor, " bucket"]
    """First position of each bucket."""
    end: Int[Tensor, " bucket"]
    """One past the last position of each bucket."""
    n_tokens: Int[Tensor, " bucket"]
    """Tokens behind ``fvu`` and ``l0``."""
    fvu: Float[Tensor, " bucket"]
    """Squared error in the bucket over the overall variance (weighted mean of positions)."""
    l0: Float[Tensor, " bucket"]
    """Mean L0 in the bucket."""
    n_loss_tokens: Int[Tensor, " bucket"]
    """Predictions behind ``delta_loss`` and ``clean_loss``."""
    delta_loss: Float[Tensor, " bucket"]
    """Mean spliced minus clean loss in the bucket."""
    clean_loss: Float[Tensor, " bucket"]
    """Mean clean loss in the bucket."""


def default_position_edges(n_positions: int) -> list[int]:
    """Every position for short rows; for longer ones 0, 1, 2, 4, 8, ... (first tokens differ most)."""
    if n_positions <= 32:
        return list(range(n_positions + 1))
    edges = [0, 1]
    while edges[-1] < n_positions:
        edges.append(min(2 * edges[-1], n_positions))
    return edges


def position_buckets(profile: PositionProfile, edges: Sequence[int] | None = None) -> PositionBuckets:
    """Pool a :class:`PositionProfile` into buckets between increasing ``edges`` (count-weighted).

    Empty buckets hold NaN. The default edges are :func:`default_position_edges`.
    """
    n_pos = profile.n_tokens.numel()
    edges = list(default_position_edges(n_pos) if edges is None else edges)
    if len(edges) < 2 or edges[0] < 0 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise ValueError(f"edges must increase from a position >= 0, got {edges}")
    edges = [e for e in edges if e < n_pos] + [n_pos]
    idx = torch.bucketize(torch.arange(n_pos), torch.tensor(edges[1:]), right=True)

    def pool(values: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        w = weights.double()
        total = torch.zeros(len(edges) - 1, dtype=torch.float64).index_add_(
            0, idx, torch.where(w > 0, values.double() * w, 0.0))
        count = torch.zeros_like(total).index_add_(0, idx, w)
        return count.long(), total / count

    n, fvu = pool(profile.fvu, profile.n_tokens)
    _, l0 = pool(profile.l0, profile.n_tokens)
    nl, delta = pool(profile.delta_loss, profile.n_loss_tokens)
    _, clean = pool(profile.clean_loss, profile.n_loss_tokens)
    return PositionBuckets(torch.tensor(edges[:-1]), torch.tensor(edges[1:]), n, fvu, l0, nl,
                           delta, clean)


def evaluate_datasets(
    model: Any, sae: Any, sources: Mapping[str, TokenSource], **kwargs: Any
) -> dict[str, EvalResult]:
    """Evaluate one SAE on several named token sources (mean ablation uses each source's mean).

    Keyword arguments go to :func:`~gemma_scope_ext.evals.metrics.evaluate`.
    """
    if not sources:
        raise ValueError("no token sources given; pass e.g. {'docstrings': tokens}")
    return {name: evaluate(model, sae, tokens, **kwargs) for name, tokens in sources.items()}


@dataclass(frozen=True)
class TransferResult:
    """One SAE on the model it was trained for and on another model, same site and tokens."""

    source: EvalResult
    """On the model the SAE was trained on (e.g. Gemma 2 2B base)."""
    target: EvalResult
    """On the other model (e.g. Gemma 2 2B IT)."""

    @property
    def delta_loss_change(self) -> float:
        """How much more loss the splice costs on the target model."""
        return self.target.delta_loss - self.source.delta_loss

    @property
    def fvu_change(self) -> float:
        """Target FVU minus source FVU."""
        return self.target.fvu - self.source.fvu

    @property
    def l0_change(self) -> float:
        """Target L0 minus source L0."""
        return self.target.l0 - self.source.l0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: both results and the differences."""
        return {"source": self.source.to_dict(), "target": self.target.to_dict(),
                "delta_loss_change": self.delta_loss_change, "fvu_change": self.fvu_change,
                "l0_change": self.l0_change}


def evaluate_transfer(
    source_model: Any, target_model: Any, sae: Any, tokens: TokenSource, **kwargs: Any
) -> TransferResult:
    """Evaluate ``sae`` on both models with the same tokens (e.g. a base SAE on the IT model)."""
    vocabs = (source_model.cfg.d_vocab, target_model.cfg.d_vocab)
    if vocabs[0] != vocabs[1]:
        raise ValueError(f"the models have different vocabularies {vocabs}; transfer compares "
                         "models sharing a tokenizer (Gemma 2 base and IT)")
    if not isinstance(tokens, Tensor):
        tokens = list(tokens)  # read twice
    return TransferResult(evaluate(source_model, sae, tokens, **kwargs),
                          evaluate(target_model, sae, tokens, **kwargs))


def pareto_frontier(l0: Sequence[float], delta_loss: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats on both L0 and delta loss, by increasing L0."""
    order = sorted(range(len(l0)), key=lambda i: (l0[i], delta_loss[i]))
    frontier, best = [], float("inf")
    for i in order:
        if delta_loss[i] < best:
            frontier.append(i)
            best = delta_loss[i]
    return frontier


@dataclass(frozen=True)
class SweepResult:
    """Several SAEs (e.g. every L0 variant of a site) on the same model and tokens."""

    names: tuple[str, ...]
    """Name of each SAE, in the order given."""
    results: tuple[EvalResult, ...]
    """Its evaluation."""

    @property
    def frontier(self) -> list[str]:
        """Names on the L0-vs-delta-loss Pareto frontier, by increasing L0."""
        idx = pareto_frontier([r.l0 for r in self.results], [r.delta_loss for r in self.results])
        return [self.names[i] for i in idx]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: each SAE's result and the frontier."""
        return {"results": {n: r.to_dict() for n, r in zip(self.names, self.results, strict=True)},
                "frontier": self.frontier}


def compare_saes(
    model: Any, saes: Mapping[str, Any], tokens: TokenSource, **kwargs: Any
) -> SweepResult:
    """Evaluate named SAEs on the same tokens, sharing each batch's clean forward pass."""
    results = evaluate_many(model, list(saes.values()), tokens, **kwargs)
    return SweepResult(tuple(saes), tuple(results))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically; NaN and infinities become null."""
    return files.write_json(path, _finite(obj))


def _finite(value: Any) -> Any:
    """Plain JSON values; NaN and infinities (empty buckets, undefined ratios) become null."""
    if isinstance(value, Tensor):
        value = value.tolist()
    elif hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    raise TypeError(f"cannot write {type(value).__name__} as JSON; convert it first")
