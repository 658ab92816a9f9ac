"""A feature budget attributes the most influential features first and keeps memory at
budget x nodes; dropping BOS nodes removes exactly the position-0 features and errors."""

from __future__ import annotations

import pytest
import torch

from gemma_scope_ext.circuits.graph import feature_graph
from gemma_scope_ext.circuits.nodes import has_inputs

pytestmark = pytest.mark.usefixtures("one_thread")


def _restricted(graph, nodes):
    """``graph``'s weights on the rows and columns of ``nodes`` (matched by id)."""
    ids = {n.id: i for i, n in enumerate(graph.nodes)}
    cols = torch.tensor([ids[n.id] for n in nodes])
    row_of = {int(r): i for i, r in enumerate(graph.rows)}
    rows = torch.tensor([row_of[ids[n.id]] for n in nodes if has_inputs(n)])
    return graph.weights[rows][:, cols]


def test_budget_attributes_the_most_influential_features_first(tiny_model, small_saes,
                                                               small_graph):
    tokens, saes = small_saes
    full = small_graph
    n_targets = sum(n.is_target for n in full.nodes)
    budget = 12  # within the first queue (update_interval x batch_size): one ranking decides
    graph = feature_graph(tiny_model, saes, tokens, progress=False, max_n_logits=3,
                          batch_size=4, max_feature_nodes=budget)
    assert graph.weights.shape == (budget + n_targets, len(graph.nodes))
    # The first ranking: each feature's share of the targets' normalised rows, by weight.
    rows = full.rows
    target_rows = full.weights[-n_targets:].abs().double()
    share = target_rows / target_rows.sum(1, keepdim=True)
    weights = torch.tensor([n.weight for n in full.nodes if n.is_target], dtype=torch.float64)
    first_order = weights @ share
    attributable = [int(i) for i in rows if full.nodes[i].kind == "feature"]
    ranked = sorted(attributable, key=lambda i: -float(first_order[i]))
    kept = {full.nodes[i].id for i in ranked[:budget]}
    got = {n.id for n in graph.nodes if n.kind == "feature" and has_inputs(n)}
    assert got == kept
    # Features outside the budget are gone; every remaining edge is the full graph's.
    dropped = {full.nodes[i].id for i in ranked[budget:]}
    assert not dropped & {n.id for n in graph.nodes}
    torch.testing.assert_close(graph.weights, _restricted(full, graph.nodes))
    # Negative control: the lowest-ranked features would have been a different set.
    assert {full.nodes[i].id for i in ranked[-budget:]} != kept


def test_a_budget_as_large_as_the_graph_changes_nothing(tiny_model, small_saes, small_graph):
    tokens, saes = small_saes
    n = sum(has_inputs(n) and n.kind == "feature" for n in small_graph.nodes)
    graph = feature_graph(tiny_model, saes, tokens, progress=False, max_n_logits=3,
                          batch_size=16, max_feature_nodes=n + 5)
    assert graph.nodes == small_graph.nodes
    torch.testing.assert_close(graph.weights, small_graph.weights)


def test_drop_bos_removes_position_zero_features_and_errors(tiny_model, small_saes, small_graph):
    tokens, saes = small_saes
    graph = feature_graph(tiny_model, saes, tokens, progress=False, max_n_logits=3,
                          batch_size=16, drop_bos=True)
    at_bos = [n for n in small_graph.nodes if n.position == 0]
    assert any(n.kind == "feature" for n in at_bos) and any(n.kind == "error" for n in at_bos)
    expected = [n for n in small_graph.nodes if n.position != 0 or n.kind == "embedding"]
    assert list(graph.nodes) == expected
    torch.testing.assert_close(graph.weights, _restricted(small_graph, graph.nodes))
    assert graph.info.drop_bos and not small_graph.info.drop_bos
