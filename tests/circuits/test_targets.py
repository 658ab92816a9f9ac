"""Targets: circuit-tracer's salient logits chosen by hand; a graph of several logits equals the
probability-weighted sum of single-logit graphs; custom directions are linear in their vector."""

from __future__ import annotations

import pytest
import torch

from gemma_scope_ext.circuits.graph import feature_graph
from gemma_scope_ext.circuits.targets import DirectionTarget, LogitTarget, salient_logits

pytestmark = pytest.mark.usefixtures("one_thread")


def test_salient_logits_follow_cumulative_probability():
    logits = torch.log(torch.tensor([0.05, 0.5, 0.3, 0.1, 0.05]))[None, None]
    # 0.5 + 0.3 = 0.8 < 0.85 <= 0.9: three tokens, in order of probability.
    chosen = salient_logits(logits, desired_logit_prob=0.85)
    assert [t.token for t in chosen] == [1, 2, 3]
    assert [t.weight for t in chosen] == pytest.approx([0.5, 0.3, 0.1])
    assert [t.token for t in salient_logits(logits, max_n_logits=2)] == [1, 2]
    assert [t.token for t in salient_logits(logits, desired_logit_prob=0.5)] == [1]
    with pytest.raises(ValueError, match="max_n_logits"):
        salient_logits(logits, max_n_logits=0)


def test_default_targets_are_the_salient_logits(tiny_model, small_saes, small_graph):
    tokens, _ = small_saes
    with torch.no_grad():
        probs = tiny_model(tokens)[0, -1].softmax(-1)
    targets = [n for n in small_graph.nodes if n.is_target]
    top = probs.topk(3)
    assert [n.feature for n in targets] == top.indices.tolist()
    assert [n.weight for n in targets] == pytest.approx(top.values.tolist(), rel=1e-5)
    assert all(n.kind == "logit" and n.position == tokens.shape[1] - 1 for n in targets)
    assert targets[0].label == tiny_model.tokenizer.decode([targets[0].feature])


def test_several_logits_equal_the_weighted_sum_of_single_logit_graphs(tiny_model, small_saes,
                                                                       small_graph):
    tokens, saes = small_saes
    targets = [n for n in small_graph.nodes if n.is_target]
    n_src = len(small_graph.nodes) - len(targets)
    total = torch.zeros(n_src, dtype=torch.float64)
    plain = torch.zeros(n_src, dtype=torch.float64)
    for t in targets:
        single = feature_graph(tiny_model, saes, tokens, progress=False, batch_size=16,
                               targets=[LogitTarget(t.feature, -1, weight=1.0)])
        assert single.nodes[:-1] == small_graph.nodes[:n_src]
        # Feature rows do not depend on the targets; each logit's row is the same in both.
        torch.testing.assert_close(single.weights[:-1, :n_src],
                                   small_graph.weights[:-len(targets), :n_src])
        row = targets.index(t) - len(targets)
        torch.testing.assert_close(single.weights[-1], torch.cat([
            small_graph.weights[row, :n_src], torch.zeros(1)]))
        total += t.weight * single.influence()[:-1].double()
        plain += single.influence()[:-1].double()
    multi = small_graph.influence()[:n_src].double()
    torch.testing.assert_close(multi, total, rtol=1e-4, atol=1e-7)
    # Negative control: the unweighted sum is a different influence.
    assert not torch.allclose(multi, plain * multi.sum() / plain.sum(), rtol=1e-2)


def test_a_direction_target_is_linear_in_its_vector(tiny_model, small_saes, small_graph):
    tokens, saes = small_saes
    logits = [n for n in small_graph.nodes if n.is_target]
    w_u = tiny_model.W_U.detach()
    ubar = w_u.mean(1)
    mix = sum(n.weight * (w_u[:, n.feature] - ubar) for n in logits)
    graph = feature_graph(tiny_model, saes, tokens, progress=False, max_feature_nodes=0,
                          targets=[DirectionTarget("mix", mix), LogitTarget(logits[0].feature)])
    ids = {n.id: i for i, n in enumerate(small_graph.nodes)}
    cols = torch.tensor([ids[n.id] for n in graph.nodes[:-2]])
    rows = small_graph.weights[-len(logits):][:, cols]
    expected = sum(n.weight * rows[i] for i, n in enumerate(logits))
    torch.testing.assert_close(graph.weights[-2, :-2], expected, rtol=1e-4, atol=1e-6)
    direction = graph.nodes[-2]
    assert direction.kind == "direction" and direction.feature == tiny_model.cfg.d_vocab
    assert direction.activation == pytest.approx(
        sum(n.weight * n.activation for n in logits), rel=1e-4)
    with pytest.raises(ValueError, match="dimensions"):
        feature_graph(tiny_model, saes, tokens, progress=False,
                      targets=[DirectionTarget("short", torch.ones(3))])
