"""Influence, pruning and scores: hand-computed values on small graphs, and pruning against a
direct re-implementation of circuit-tracer's rule (dense matrices, a matrix inverse, loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gemma_scope_ext.circuits.feature_graph import FeatureGraph
from gemma_scope_ext.circuits.nodes import GraphNode


def _hand_graph():
    node = GraphNode
    nodes = (node("embedding", "embedding", None, 0, 2, 1.0),
             node("feature", "transcoder", 0, 0, 5, 1.0),
             node("feature", "transcoder", 1, 0, 6, 1.0),
             node("feature", "transcoder", 0, 0, 7, 1.0),
             node("metric", "metric", None, None, None, 2.0, 1.0))
    a = torch.zeros(5, 5)
    a[4, 1], a[4, 2] = 3.0, -1.0  # metric <- A (3), B (-1)
    a[1, 0] = 2.0  # A <- embedding
    a[2, 0], a[2, 3] = 1.0, 1.0  # B <- embedding, C
    return FeatureGraph.from_adjacency(nodes, a, (2,))


def test_influence_on_a_hand_built_graph():
    graph = _hand_graph()
    # By hand: metric row normalised (A .75, B .25); B's row (emb .5, C .5).
    torch.testing.assert_close(graph.influence(),
                               torch.tensor([0.875, 0.75, 0.25, 0.125, 0.0]))
    assert graph.weights.shape == (4, 5)  # the embedding has no row
    with pytest.raises(ValueError, match="cannot receive edges"):
        FeatureGraph.from_adjacency(graph.nodes, torch.ones(5, 5), (2,))


def test_pruning_a_hand_built_graph():
    graph = _hand_graph()
    # Influence shares, descending: emb .875 (0.44), A .75 (0.81), B .25 ...: 0.8 keeps emb and A;
    # the embedding is kept anyway. C and B go; the metric keeps its edge from A, A from emb.
    pruned = graph.prune(node_threshold=0.8, edge_threshold=1.0)
    assert [n.id for n in pruned.nodes] == ["embedding@0", "transcoder.0@0#5", "metric"]
    assert pruned.adjacency.tolist() == [[0, 0, 0], [2.0, 0, 0], [0, 3.0, 0]]
    # Cumulative shares come from the unpruned graph: 0.875/2, (0.875+0.75)/2, and 1 for the
    # target (ranked last, with no influence).
    torch.testing.assert_close(pruned.cumulative, torch.tensor([0.4375, 0.8125, 1.0]))


def test_scores_on_a_hand_built_graph():
    node = GraphNode
    nodes = (node("embedding", "embedding", None, 0, 2, 1.0),
             node("error", "transcoder", 0, 0, None, 1.0),
             node("feature", "transcoder", 0, 0, 3, 1.0),
             node("logit", "logit", None, 0, 9, 1.0, 1.0))
    a = torch.zeros(4, 4)
    a[2, 0], a[2, 1] = 1.0, -1.0  # feature <- token, error
    a[3, 2], a[3, 1] = 2.0, 2.0  # logit <- feature, error
    scores = FeatureGraph.from_adjacency(nodes, a, (2,)).scores()
    # Influence: feature .5, error .5 + .25 = .75, token .25 -> replacement .25 / (.25 + .75).
    # Completeness: token 1 x .25, error 1 x .75, feature .5 x .5, logit .5 x 1; over 2.5.
    assert scores.replacement == pytest.approx(0.25)
    assert scores.completeness == pytest.approx(1.75 / 2.5)


def _reference_prune(adj, kinds, weights, node_threshold, edge_threshold):
    """circuit-tracer's rule, written directly: kinds per node in {'token', 'error', 'feature',
    'target'}; every feature here receives edges."""
    n = len(kinds)
    a = np.abs(adj)
    a = a / np.maximum(a.sum(1, keepdims=True), 1e-10)
    w = np.asarray(weights, dtype=np.float64)
    influence = w @ a @ np.linalg.inv(np.eye(n) - a)

    def threshold(scores, fraction):
        ordered = sorted(scores, reverse=True)
        total, run = sum(ordered), 0.0
        for s in ordered:
            run += s
            if run / total >= fraction:
                return s
        return ordered[-1]

    keep = {i for i in range(n) if influence[i] >= threshold(list(influence), node_threshold)
            or kinds[i] in ("token", "target")}
    p = np.array([[abs(adj[t, s]) if t in keep and s in keep else 0.0 for s in range(n)]
                  for t in range(n)])
    p = p / np.maximum(p.sum(1, keepdims=True), 1e-10)
    reach = w @ p @ np.linalg.inv(np.eye(n) - p) + w
    score = {(t, s): p[t, s] * reach[t] for t in range(n) for s in range(n) if p[t, s] > 0}
    cut = threshold(list(score.values()), edge_threshold)
    edges = {e for e, v in score.items() if v >= cut}
    changed = True
    while changed:
        changed = False
        for i in sorted(keep):
            if kinds[i] in ("token", "target"):
                continue
            has_out = any(s == i for _, s in edges)
            has_in = any(t == i for t, _ in edges)
            if not has_out or (kinds[i] == "feature" and not has_in):
                keep.discard(i)
                edges = {(t, s) for t, s in edges if t != i and s != i}
                changed = True
    return keep, edges


def _random_graph(seed):
    """A layered random graph: 3 tokens, 3 layers of 5 features and one error each, 2 targets."""
    g = np.random.default_rng(seed)
    nodes, kinds, layer_of = [], [], []
    for p in range(3):
        nodes.append(GraphNode("embedding", "embedding", None, p, p, 1.0))
        kinds.append("token")
        layer_of.append(-1)
    for layer in range(3):
        for k in range(5):
            nodes.append(GraphNode("feature", "transcoder", layer, int(g.integers(3)), k, 1.0))
            kinds.append("feature")
            layer_of.append(layer)
        nodes.append(GraphNode("error", "transcoder", layer, 0, None, 1.0))
        kinds.append("error")
        layer_of.append(layer)
    for t, w in enumerate((0.7, 0.2)):
        nodes.append(GraphNode("logit", "logit", None, 2, 100 + t, 1.0, w))
        kinds.append("target")
        layer_of.append(3)
    n = len(nodes)
    adj = np.zeros((n, n))
    for t in range(n):
        if kinds[t] not in ("feature", "target"):
            continue
        for s in range(n):
            if layer_of[s] < layer_of[t] and kinds[s] != "target" and g.random() < 0.5:
                adj[t, s] = g.normal() * g.exponential()
    return nodes, kinds, adj


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thresholds", [(0.8, 0.98), (0.5, 0.7), (0.95, 0.9)])
def test_pruning_keeps_what_a_direct_reimplementation_keeps(seed, thresholds):
    nodes, kinds, adj = _random_graph(seed)
    graph = FeatureGraph.from_adjacency(tuple(nodes), torch.tensor(adj, dtype=torch.float32),
                                        (0, 1, 2))
    weights = [n.weight for n in nodes]
    keep, edges = _reference_prune(graph.adjacency.double().numpy(), kinds, weights, *thresholds)
    pruned = graph.prune(*thresholds)
    ids = [n.id for n in nodes]
    assert [n.id for n in pruned.nodes] == [ids[i] for i in sorted(keep)]
    got = {(ids[graph.nodes.index(pruned.nodes[e.target])],
            ids[graph.nodes.index(pruned.nodes[e.source])]) for e in pruned.edges()}
    assert got == {(ids[t], ids[s]) for t, s in edges}
    # Kept edges keep their weights.
    for e in pruned.edges():
        t, s = graph.nodes.index(pruned.nodes[e.target]), graph.nodes.index(pruned.nodes[e.source])
        assert e.weight == float(graph.adjacency[t, s])


def test_the_rule_differs_from_pruning_on_unpruned_influence():
    """Negative control: scoring edges with the unpruned influence, and keeping dangling nodes,
    keeps a different graph on some of these cases (so the comparison above can fail)."""
    differs = 0
    for seed in range(6):
        nodes, kinds, adj = _random_graph(seed)
        graph = FeatureGraph.from_adjacency(tuple(nodes), torch.tensor(adj, dtype=torch.float32),
                                            (0, 1, 2))
        pruned = graph.prune(0.5, 0.7)
        a = np.abs(adj) / np.maximum(np.abs(adj).sum(1, keepdims=True), 1e-10)
        w = np.array([n.weight for n in nodes])
        inf = w @ a @ np.linalg.inv(np.eye(len(nodes)) - a)
        order = np.argsort(-inf)
        share = np.cumsum(inf[order]) / inf.sum()
        naive = set(order[: int((share < 0.5).sum()) + 1].tolist())
        naive |= {i for i, k in enumerate(kinds) if k in ("token", "target")}
        differs += naive != {graph.nodes.index(n) for n in pruned.nodes}
    assert differs
