"""The cross-layer feature graph of one prompt: direct effects between SAE/transcoder features.

As circuit-tracer does for Gemma 2 transcoders: attention patterns and every RMSNorm scale are
frozen at their values on the prompt (detached), and each spliced site's output is replaced by
``decode(f) + e`` with its features and error as constant leaves. What is left between the nodes is
linear: the residual stream, attention's OV path through the frozen pattern, and the normalisations
with frozen scales. The edge from source s to target t is ``a_s * d(input of t)/d(a_s)`` in that
linear model, which is exactly the change in t's input when s is zeroed and nothing else moves.

Nodes: token embeddings (per position), active features, error terms (per site and position), MLP
outputs at layers without a transcoder or MLP SAE (frozen, per position, kind ``error``), and the
metric. A feature's input is its SAE pre-activation. MLP-SAE and embedding-SAE features have no
incoming edges (their inputs pass through an MLP's nonlinearity or come straight from the token), so
they, like errors and embeddings, are sources only. The metric is linearised at the prompt: its
edges are gradient x activation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from gemma_scope_ext.circuits.splice import SAEHookPoint, SplicedSite, splice
from gemma_scope_ext.files import write_json

__all__ = ["Edge", "FeatureGraph", "GraphNode", "feature_graph", "pre_activations"]

_SOURCE_ONLY_SITES = ("mlp", "embedding")


class GraphNode(NamedTuple):
    """One node of the graph."""

    kind: str
    """``feature``, ``error``, ``embedding`` or ``metric``."""
    site: str
    """Gemma Scope site of the feature or error (``embedding`` / ``metric`` for those)."""
    layer: int | None
    """Block index, None for the embedding and the metric."""
    position: int | None
    """Token position, None for the metric."""
    feature: int | None
    """Feature index for feature nodes, else None."""
    activation: float
    """Feature activation, the vector's norm for error/embedding nodes, the metric's value."""

    @property
    def id(self) -> str:
        """A readable unique name, e.g. ``transcoder.2@5#113`` or ``res.1@7#error``."""
        if self.kind == "metric":
            return "metric"
        if self.kind == "embedding":
            return f"embedding@{self.position}"
        tail = "error" if self.kind == "error" else str(self.feature)
        return f"{self.site}.{self.layer}@{self.position}#{tail}"


class Edge(NamedTuple):
    """A direct effect: ``weight`` is the change in the target's input caused by the source."""

    source: int
    """Index of the source node."""
    target: int
    """Index of the target node."""
    weight: float
    """Direct effect of the source's activation on the target's input."""


@dataclass(frozen=True)
class FeatureGraph:
    """Nodes and the matrix of direct effects between them for one prompt."""

    nodes: tuple[GraphNode, ...]
    """All nodes; the metric is the last."""
    adjacency: Tensor
    """[n, n] with ``adjacency[target, source]`` the direct effect (zero where no edge)."""
    tokens: tuple[int, ...]
    """The prompt."""

    def index(self, site: str, layer: int | None, position: int | None,
              feature: int | None = None, kind: str = "feature") -> int:
        """Index of a node (``kind`` ``error`` with feature None for an error node)."""
        for i, n in enumerate(self.nodes):
            if (n.kind, n.site, n.layer, n.position, n.feature) == (
                    kind, site, layer, position, feature):
                return i
        raise KeyError(f"no {kind} node ({site!r}, {layer}, {position}, {feature}) in the graph")

    def edges(self) -> list[Edge]:
        """Every non-zero edge, largest magnitude first."""
        t, s = torch.nonzero(self.adjacency, as_tuple=True)
        w = self.adjacency[t, s]
        order = w.abs().argsort(descending=True)
        return [Edge(int(s[i]), int(t[i]), float(w[i])) for i in order]

    def influence(self) -> Tensor:
        """Each node's share of the metric through all paths, with every node's |incoming| edges
        normalised to sum to one (circuit-tracer's indirect influence)."""
        a = self.adjacency.abs().double()
        a = a / a.sum(1, keepdim=True).clamp_min(1e-30)
        n = a.shape[0]
        e = torch.zeros(n, dtype=a.dtype)
        e[-1] = 1.0
        # influence^T = e^T (A + A^2 + ...) = e^T A (I - A)^-1; A is nilpotent (a DAG).
        return torch.linalg.solve((torch.eye(n, dtype=a.dtype) - a).T, a.T @ e).float()

    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> FeatureGraph:
        """Keep the nodes carrying ``node_threshold`` of the metric's influence, then the edges
        carrying ``edge_threshold`` of the remaining influence-weighted edge mass."""
        if not (0 < node_threshold <= 1 and 0 < edge_threshold <= 1):
            raise ValueError(f"thresholds must be in (0, 1], got {node_threshold}, {edge_threshold}")
        inf = self.influence()
        n = len(self.nodes)
        keep = torch.zeros(n, dtype=torch.bool)
        keep[-1] = True
        order = inf[:-1].argsort(descending=True)
        cum = inf[:-1][order].cumsum(0) / inf[:-1].sum().clamp_min(1e-30)
        keep[order[: int((cum < node_threshold).sum()) + 1]] = True
        a = self.adjacency.abs()
        a = a / a.sum(1, keepdim=True).clamp_min(1e-30)
        target_weight = inf.clone()
        target_weight[-1] = 1.0
        score = a * target_weight[:, None] * (keep[:, None] & keep[None, :])
        flat = score.flatten()
        order = flat.argsort(descending=True)
        cum = flat[order].cumsum(0) / flat.sum().clamp_min(1e-30)
        edge_keep = torch.zeros_like(flat, dtype=torch.bool)
        edge_keep[order[: int((cum < edge_threshold).sum()) + 1]] = True
        edge_keep &= flat > 0
        kept_adj = torch.where(edge_keep.view(n, n), self.adjacency, 0.0)
        used = kept_adj.ne(0).any(0) | kept_adj.ne(0).any(1)
        used[-1] = True
        idx = torch.nonzero(used).flatten()
        return replace(self, nodes=tuple(self.nodes[i] for i in idx.tolist()),
                       adjacency=kept_adj[idx][:, idx])

    def to_json(self, path: str | os.PathLike, token_strings: list[str] | None = None) -> Path:
        """Write nodes and edges as JSON, atomically (temp file in the same folder, then rename)."""
        inf = self.influence().tolist()
        data = {
            "tokens": list(self.tokens),
            "token_strings": token_strings,
            "nodes": [{"id": n.id, **n._asdict(), "influence": inf[i]}
                      for i, n in enumerate(self.nodes)],
            "edges": [{"source": self.nodes[e.source].id, "target": self.nodes[e.target].id,
                       "weight": e.weight} for e in self.edges()],
        }
        return write_json(path, data, indent=1)


def pre_activations(sae: Any, x: Tensor) -> Tensor:
    """The SAE's pre-activations (what its ``hook_sae_acts_pre`` sees) for input ``x``."""
    seen: dict[str, Tensor] = {}
    with sae.hooks(fwd_hooks=[("hook_sae_acts_pre", lambda t, hook: seen.setdefault("pre", t))]):
        sae.encode(x)
    return seen["pre"]


class _Group(NamedTuple):
    """Nodes that share one leaf tensor: a site's features, its errors, embeddings, an MLP out."""

    leaf: Callable[[], Tensor]  # the leaf of the latest forward, [batch, pos, width]
    value: Tensor  # its value on the prompt, [pos, width]
    per_feature: bool  # one node per active (pos, feature), else one per position
    index: Tensor  # node index of each (pos) or each active (pos, feature)
    where: tuple[Tensor, ...]  # positions (and features) of those nodes


def _freeze_hooks(model: Any, leaves: dict[str, Tensor]) -> list:
    def detach(x: Tensor, hook: Any) -> Tensor:
        return x.detach()

    def as_leaf(x: Tensor, hook: Any) -> Tensor:
        leaves[hook.name] = x.detach().requires_grad_(True)
        return leaves[hook.name]

    hooks = [(n, detach) for n in model.hook_dict
             if n.endswith("attn.hook_pattern") or n.endswith("hook_scale")]
    frozen = [f"blocks.{i}.hook_mlp_out" for i in range(model.cfg.n_layers)] + ["hook_embed"]
    return hooks + [(n, as_leaf) for n in frozen if not isinstance(model.hook_dict[n], SAEHookPoint)]


def feature_graph(
    model: Any, saes: Any, tokens: Int[Tensor, "1 pos"], metric: Callable[[Tensor], Tensor],
    batch_size: int = 32, progress: bool = True,
) -> FeatureGraph:
    """Direct effects between every node on one prompt (see the module docstring)."""
    if tokens.ndim != 2 or tokens.shape[0] != 1:
        raise ValueError(f"feature_graph takes one prompt, tokens of shape [1, pos]; got "
                         f"{tuple(tokens.shape)}")
    nodes: list[GraphNode] = []
    groups: list[_Group] = []
    targets: list[tuple[SplicedSite, int, int, int]] = []  # site, pos, feature, node index
    leaves: dict[str, Tensor] = {}
    with splice(model, saes, use_error_term=True) as sp:
        sp.set_leaf_nodes(True)
        hooks = _freeze_hooks(model, leaves)
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            logits = model(tokens)
        metric_value = float(metric(logits))

        def add_vectors(leaf: Callable[[], Tensor], kind: str, site: str, layer: int | None):
            value = leaf()[0].detach()
            start = len(nodes)
            nodes.extend(GraphNode(kind, site, layer, p, None, float(value[p].norm()))
                         for p in range(value.shape[0]))
            pos = torch.arange(value.shape[0])
            groups.append(_Group(leaf, value, False, start + pos, (pos,)))

        if "hook_embed" in leaves:
            add_vectors(lambda: leaves["hook_embed"], "embedding", "embedding", None)
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.hook_mlp_out"
            if name in leaves:
                add_vectors(lambda name=name: leaves[name], "error", "mlp", layer)
        for site in sp.sites:
            f = sp.nodes(site.sae).features[0].detach()
            pos, feat = torch.nonzero(f, as_tuple=True)
            start = len(nodes)
            for p, k in zip(pos.tolist(), feat.tolist(), strict=True):
                if site.site not in _SOURCE_ONLY_SITES:
                    targets.append((site, p, k, len(nodes)))
                nodes.append(GraphNode("feature", site.site, site.layer, p, k, float(f[p, k])))
            groups.append(_Group(lambda s=site: sp.nodes(s.sae).features, f, True,
                                 start + torch.arange(len(pos)), (pos, feat)))
            add_vectors(lambda s=site: sp.nodes(s.sae).error, "error", site.site, site.layer)
        nodes.append(GraphNode("metric", "metric", None, None, None, metric_value))
        adjacency = torch.zeros(len(nodes), len(nodes))

        def fill(rows: list[int], objective: Callable[[Tensor], Tensor], batch: int) -> None:
            with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
                logits = model(tokens.expand(batch, -1))
                grads = torch.autograd.grad(objective(logits), [g.leaf() for g in groups],
                                            allow_unused=True)
            for g, grad in zip(groups, grads, strict=True):
                if grad is None:
                    continue
                if g.per_feature:
                    w = (grad * g.value)[:, g.where[0], g.where[1]]
                else:
                    w = (grad * g.value).sum(-1)[:, g.where[0]]
                adjacency[torch.tensor(rows)[:, None], g.index[None, :]] = w.detach()

        chunks = [targets[i:i + batch_size] for i in range(0, len(targets), batch_size)]
        for chunk in tqdm(chunks, desc="feature graph", disable=not progress):

            def objective(_: Tensor, chunk: list = chunk) -> Tensor:
                # Row r of the batch carries target r: rows never mix in a frozen forward.
                pre: dict[str, Tensor] = {}
                total = torch.zeros(())
                for r, (site, p, k, _) in enumerate(chunk):
                    if site.hook_out not in pre:
                        pre[site.hook_out] = pre_activations(site.sae, sp.nodes(site.sae).sae_in)
                    total = total + pre[site.hook_out][r, p, k]
                return total

            fill([t[3] for t in chunk], objective, len(chunk))
        fill([len(nodes) - 1], metric, 1)
    return FeatureGraph(tuple(nodes), adjacency, tuple(tokens[0].tolist()))
