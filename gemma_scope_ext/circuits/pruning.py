"""Influence, pruning and the replacement / completeness scores of a feature graph, as tensors.

A graph's edges are stored as the rows of the nodes that receive any (``rows`` [r], ascending) and
a matrix ``weights`` [r, n] with ``weights[i, s]`` the direct effect of node s on node rows[i].
Every function here takes that pair, so memory is r x n, never n x n.

The rules are circuit-tracer's (Ameisen et al. 2025, "Circuit tracing"), written afresh:

- Influence: with every row of |weights| normalised to sum to one (A), a node's influence is
  ``w^T (A + A^2 + ...)``, w the targets' weights; A is nilpotent (the graph is acyclic).
- Pruning: keep the nodes whose influence makes up ``node_threshold`` of the total (smallest set,
  ties kept), plus every token and target node; recompute influence on that node-pruned matrix
  and score each edge as its normalised weight times its target's (influence + weight); keep the
  edges making up ``edge_threshold`` of the score; then drop, until nothing changes, features and
  errors with no kept outgoing edge and features that receive edges but kept none. Edges of zero
  weight never count as kept (circuit-tracer's dense mask can count them at edge_threshold = 1).
- Replacement score: the share of the targets' influence that starts at token nodes rather than at
  error nodes (or at source-only features, whose inputs the graph does not explain).
- Completeness score: the influence-weighted mean, over all nodes, of the share of each node's
  normalised input that does not come from error nodes (nodes without inputs count as complete).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = ["GraphScores", "PruneResult", "cumulative_share", "graph_scores", "influence",
           "prune_masks"]

_MAX_DEPTH = 10_000


class PruneResult(NamedTuple):
    """What pruning keeps."""

    node_mask: Bool[Tensor, " n"]
    """Nodes kept."""
    edge_mask: Bool[Tensor, "r n"]
    """Edges kept, laid out like ``weights``."""
    cumulative: Float[Tensor, " n"]
    """Each node's cumulative share of influence at its rank (the graph file's ``influence``)."""


class GraphScores(NamedTuple):
    """How much of a graph's computation flows through features rather than error nodes."""

    replacement: float
    """Share of the targets' influence that starts at the tokens (1: no error node on any path)."""
    completeness: float
    """Influence-weighted share of node inputs that come from non-error nodes."""


def _normalised(weights: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    a = weights.abs().to(dtype)
    return a / a.sum(1, keepdim=True).clamp_min(1e-10)


def _influence(a: Tensor, rows: Tensor, target_weights: Tensor) -> Tensor:
    prod = target_weights.to(a.dtype)
    total = torch.zeros_like(prod)
    for _ in range(_MAX_DEPTH):
        prod = prod[rows] @ a
        if not prod.any():
            return total
        total += prod
    raise RuntimeError(f"influence did not vanish after {_MAX_DEPTH} steps: the graph has a cycle")


def influence(
    weights: Float[Tensor, "r n"], rows: Int[Tensor, " r"], target_weights: Float[Tensor, " n"],
    dtype: torch.dtype = torch.float64,
) -> Float[Tensor, " n"]:
    """Each node's influence on the targets through every path (float64 unless ``dtype``)."""
    return _influence(_normalised(weights, dtype), rows, target_weights)


def _threshold(scores: Tensor, fraction: float) -> Tensor:
    """The smallest score among the top scores that carry ``fraction`` of the total."""
    ordered = scores.sort(descending=True).values
    total = ordered.sum()
    if ordered.numel() == 0 or total <= 0:
        return torch.tensor(float("inf"), dtype=scores.dtype)
    cumulative = ordered.cumsum(0) / total
    index = int(torch.searchsorted(cumulative, torch.tensor(fraction, dtype=cumulative.dtype)))
    return ordered[min(index, ordered.numel() - 1)]


def cumulative_share(inf: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
    """Each node's cumulative share of the total influence at its rank (float32)."""
    ordered, order = inf.sort(descending=True, stable=True)
    out = torch.zeros_like(inf)
    out[order] = ordered.cumsum(0) / ordered.sum().clamp_min(1e-30)
    return out.float()


def prune_masks(
    weights: Float[Tensor, "r n"], rows: Int[Tensor, " r"], target_weights: Float[Tensor, " n"],
    always_keep: Bool[Tensor, " n"], needs_input: Bool[Tensor, " n"],
    node_threshold: float = 0.8, edge_threshold: float = 0.98,
) -> PruneResult:
    """Which nodes and edges circuit-tracer's rule keeps (see the module docstring).

    ``always_keep`` marks token and target nodes; ``needs_input`` the features that receive edges.
    """
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    a = _normalised(weights)
    inf = _influence(a, rows, target_weights)
    node_mask = (inf >= _threshold(inf, node_threshold)) | always_keep
    pruned = a * (node_mask[rows][:, None] & node_mask[None, :])
    pruned_a = pruned / pruned.sum(1, keepdim=True).clamp_min(1e-10)
    reach = _influence(pruned_a, rows, target_weights) + target_weights.to(torch.float64)
    score = pruned_a * reach[rows][:, None]
    edge_mask = (score >= _threshold(score[score > 0], edge_threshold)) & (score > 0)
    while True:
        has_out = edge_mask.any(0)
        has_in = torch.zeros_like(node_mask)
        has_in[rows] = edge_mask.any(1)
        kept = node_mask & (always_keep | has_out) & (always_keep | ~needs_input | has_in)
        if torch.equal(kept, node_mask):
            break
        node_mask = kept
        edge_mask &= node_mask[rows][:, None] & node_mask[None, :]
    return PruneResult(node_mask, edge_mask, cumulative_share(inf))


def graph_scores(
    weights: Float[Tensor, "r n"], rows: Int[Tensor, " r"], target_weights: Float[Tensor, " n"],
    is_token: Bool[Tensor, " n"], is_error: Bool[Tensor, " n"],
) -> GraphScores:
    """Replacement and completeness scores (see the module docstring)."""
    a = _normalised(weights)
    inf = _influence(a, rows, target_weights)
    is_source = torch.ones_like(is_token)
    is_source[rows] = False
    total = inf[is_source].sum()
    replacement = float(inf[is_token].sum() / total) if total > 0 else float("nan")
    complete = torch.ones_like(inf)
    complete[rows] = 1 - a[:, is_error].sum(1)
    reach = inf + target_weights.to(torch.float64)
    completeness = float((complete * reach).sum() / reach.sum().clamp_min(1e-30))
    return GraphScores(replacement, completeness)
