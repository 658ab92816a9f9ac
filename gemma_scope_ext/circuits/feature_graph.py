"""``FeatureGraph``: the nodes of one prompt's attribution graph and the direct effects between them.

Only nodes that can receive edges (targets, and features at sites reached from upstream) have a
row, so a graph stores ``weights`` [rows, nodes] rather than a square matrix: with a feature budget
its memory grows linearly with the prompt. ``adjacency`` gives the square matrix on demand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from gemma_scope_ext.circuits.graph_html import html_page
from gemma_scope_ext.circuits.graph_json import from_circuit_tracer, to_circuit_tracer
from gemma_scope_ext.circuits.nodes import Edge, GraphInfo, GraphNode, has_inputs
from gemma_scope_ext.circuits.pruning import (
    GraphScores,
    cumulative_share,
    graph_scores,
    influence,
    prune_masks,
)
from gemma_scope_ext.files import write_json, write_text

__all__ = ["FeatureGraph"]


@dataclass(frozen=True, eq=False)
class FeatureGraph:
    """Nodes and direct effects for one prompt; targets are the last nodes."""

    nodes: tuple[GraphNode, ...]
    """Sources in residual-stream order (embedding, then each layer's sites), then the targets."""
    weights: Tensor
    """[rows, nodes]: ``weights[i, s]`` is the direct effect of node s on node ``rows[i]``."""
    tokens: tuple[int, ...]
    """The prompt's token ids."""
    token_strings: tuple[str, ...] = ()
    """The prompt's tokens as text (empty when the model had no tokenizer)."""
    info: GraphInfo | None = None
    """How the graph was built (None for graphs assembled by hand)."""
    cumulative: Tensor | None = None
    """[nodes] each node's cumulative influence share in the graph this one was pruned from
    (None: this graph's own, see ``cumulative_influence``)."""

    def __post_init__(self) -> None:
        expected = (int(self.rows.numel()), len(self.nodes))
        if tuple(self.weights.shape) != expected:
            raise ValueError(f"weights must be [rows, nodes] = {list(expected)}; got "
                             f"{list(self.weights.shape)}")
        if self.cumulative is not None and self.cumulative.shape != (len(self.nodes),):
            raise ValueError("cumulative must hold one value per node")

    @classmethod
    def from_adjacency(cls, nodes: tuple[GraphNode, ...], adjacency: Tensor,
                       tokens: tuple[int, ...], **fields) -> FeatureGraph:
        """A graph from a square [target, source] matrix (rows of nodes without inputs are zero)."""
        rows = torch.tensor([i for i, n in enumerate(nodes) if has_inputs(n)], dtype=torch.long)
        rest = torch.ones(len(nodes), dtype=torch.bool)
        rest[rows] = False
        if adjacency[rest].any():
            bad = [nodes[i].id for i in torch.nonzero(adjacency[rest].any(1)).flatten().tolist()]
            raise ValueError(f"nodes without inputs cannot receive edges: {bad[:5]}")
        return cls(tuple(nodes), adjacency[rows].clone(), tuple(tokens), **fields)

    @property
    def rows(self) -> Tensor:
        """Indices of the nodes that have a row in ``weights`` (ascending)."""
        return torch.tensor([i for i, n in enumerate(self.nodes) if has_inputs(n)],
                            dtype=torch.long)

    @property
    def adjacency(self) -> Tensor:
        """[nodes, nodes] with ``adjacency[target, source]`` the direct effect (O(nodes^2))."""
        out = torch.zeros(len(self.nodes), len(self.nodes), dtype=self.weights.dtype)
        out[self.rows] = self.weights
        return out

    def target_weights(self) -> Tensor:
        """[nodes] the targets' weights, zero elsewhere."""
        return torch.tensor([n.weight if n.is_target else 0.0 for n in self.nodes],
                            dtype=torch.float64)

    def _mask(self, kinds: tuple[str, ...]) -> Tensor:
        return torch.tensor([n.kind in kinds for n in self.nodes], dtype=torch.bool)

    def index(self, site: str, layer: int | None, position: int | None,
              feature: int | None = None, kind: str = "feature") -> int:
        """Index of a node (``kind`` ``error`` with feature None for an error node; an embedding
        node matches with feature None or its token id)."""
        for i, n in enumerate(self.nodes):
            ours = n.feature if not (kind == "embedding" and feature is None) else None
            if (n.kind, n.site, n.layer, n.position, ours) == (
                    kind, site, layer, position, feature):
                return i
        raise KeyError(f"no {kind} node ({site!r}, {layer}, {position}, {feature}) in the graph")

    def edges(self) -> list[Edge]:
        """Every non-zero edge, largest magnitude first."""
        r, s = torch.nonzero(self.weights, as_tuple=True)
        w = self.weights[r, s]
        t = self.rows[r]
        order = w.abs().argsort(descending=True)
        return [Edge(int(s[i]), int(t[i]), float(w[i])) for i in order]

    def influence(self) -> Tensor:
        """Each node's influence on the targets through all paths, with every node's |incoming|
        edges normalised to sum to one, weighted by the targets' weights (circuit-tracer's)."""
        return influence(self.weights, self.rows, self.target_weights()).float()

    def cumulative_influence(self) -> Tensor:
        """[nodes] each node's cumulative share of influence at its rank: from the graph this one
        was pruned from, else from this one (circuit-tracer's ``influence`` in the graph file)."""
        if self.cumulative is not None:
            return self.cumulative
        return cumulative_share(influence(self.weights, self.rows, self.target_weights()))

    def scores(self) -> GraphScores:
        """circuit-tracer's replacement and completeness scores (see ``pruning``)."""
        return graph_scores(self.weights, self.rows, self.target_weights(),
                            self._mask(("embedding",)), self._mask(("error",)))

    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> FeatureGraph:
        """circuit-tracer's pruning: the nodes carrying ``node_threshold`` of the influence (tokens
        and targets always), then the edges carrying ``edge_threshold`` of the influence-weighted
        edge mass on the node-pruned graph, then no dangling nodes (see ``pruning``)."""
        rows = self.rows
        needs_input = torch.zeros(len(self.nodes), dtype=torch.bool)
        needs_input[rows] = True
        needs_input &= self._mask(("feature",))
        keep = prune_masks(self.weights, rows, self.target_weights(),
                           self._mask(("embedding", "logit", "direction", "metric")), needs_input,
                           node_threshold, edge_threshold)
        idx = torch.nonzero(keep.node_mask).flatten()
        row_keep = keep.node_mask[rows]
        weights = torch.where(keep.edge_mask, self.weights, 0.0)[row_keep][:, idx]
        cumulative = self.cumulative_influence()
        return replace(self, nodes=tuple(self.nodes[i] for i in idx.tolist()), weights=weights,
                       cumulative=cumulative[idx])

    def to_dict(self, slug: str = "graph", scan: str | None = None,
                node_threshold: float | None = None) -> dict:
        """The graph as circuit-tracer's graph JSON (metadata, qParams, nodes, links)."""
        return to_circuit_tracer(self.nodes, self.weights, self.rows, self.tokens,
                                 self.token_strings, self.info,
                                 self.cumulative_influence().tolist(), slug=slug,
                                 scan=scan, node_threshold=node_threshold)

    def to_json(self, path: str | os.PathLike, token_strings: list[str] | None = None,
                slug: str | None = None, scan: str | None = None,
                node_threshold: float | None = None) -> Path:
        """Write circuit-tracer's graph JSON atomically; its viewer opens it as is."""
        graph = self if token_strings is None else replace(self, token_strings=tuple(token_strings))
        data = graph.to_dict(slug or Path(path).stem, scan, node_threshold)
        return write_json(path, data, indent=1)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureGraph:
        """A graph from circuit-tracer's graph JSON (ours or circuit-tracer's own)."""
        parts = from_circuit_tracer(data)
        graph = cls.from_adjacency(parts.nodes, parts.adjacency, parts.tokens,
                                   token_strings=parts.token_strings, info=parts.info,
                                   cumulative=parts.cumulative)
        return graph

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> FeatureGraph:
        """Load a graph file written by ``to_json`` (the same graph) or by circuit-tracer."""
        import json

        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_html(self, path: str | os.PathLike, title: str | None = None) -> Path:
        """A self-contained HTML view (no server, nothing fetched): nodes by position and layer,
        edges coloured by sign; hover for details, click to follow a node's edges."""
        data = self.to_dict(Path(path).stem)
        return write_text(path, html_page(data, title or Path(path).stem))
