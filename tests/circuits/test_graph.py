"""The cross-layer feature graph: every edge checked against a brute-force frozen model built from
cached attention patterns and norm scales; pruning and JSON on a hand-built graph."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from gemma_scope_ext.circuits.attribution import logit_diff
from gemma_scope_ext.circuits.graph import FeatureGraph, GraphNode, feature_graph, pre_activations
from tests.helpers.random_saes import random_jumprelu as _random_jumprelu

POS = 11


def random_jumprelu(cache, hook, **kwargs):
    """32 latents, not 64: the brute-force reference below costs one forward per source."""
    return _random_jumprelu(cache, hook, **{"d_sae": 32, **kwargs})


def _flat(x):
    return x.flatten(-2) if x.ndim == 4 else x


def _flat_mode(sae):
    """A copy that reads hook_z flattened, as the reference below feeds it."""
    sae = copy.deepcopy(sae)
    if getattr(sae, "hook_z_reshaping_mode", False):
        sae.turn_off_forward_pass_hook_z_reshaping()
    return sae


class BruteForce:
    """The frozen linear model rebuilt by hand: patterns and norm scales replayed from a clean
    cache, every spliced site's output set to decode(features) + error from cached values."""

    def __init__(self, model, saes, tokens):
        self.model, self.saes, self.tokens = model, [_flat_mode(s) for s in saes], tokens
        saes = self.saes
        _, self.cache = model.run_with_cache(tokens)
        self.outs = {s.cfg.metadata.hook_name_out or s.cfg.metadata.hook_name: s for s in saes}
        self.values = {"hook_embed": self.cache["hook_embed"][0]}
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.hook_mlp_out"
            if name not in self.outs:
                self.values[name] = self.cache[name][0]
        for out, sae in self.outs.items():
            x = _flat(self.cache[sae.cfg.metadata.hook_name])
            f = sae.encode(x).detach()
            self.values[out + "#f"] = f[0]
            self.values[out + "#e"] = (_flat(self.cache[out]) - sae.decode(f)).detach()[0]

    def run(self, values):
        """Pre-activations of every SAE and the logits, for the given node values."""
        inputs = {}

        def replay(x, hook):
            return self.cache[hook.name]

        def capture(x, hook):
            inputs[hook.name] = _flat(x)

        def put(x, hook):
            if hook.name in self.outs:
                sae = self.outs[hook.name]
                out = sae.decode(values[hook.name + "#f"]) + values[hook.name + "#e"]
                return out[None].reshape(x.shape)
            return values[hook.name][None]

        names = list(self.model.hook_dict)
        hooks = [(n, replay) for n in names if n.endswith("hook_pattern") or n.endswith("scale")]
        hooks += [(s.cfg.metadata.hook_name, capture) for s in self.saes]
        hooks += [(n, put) for n in self.values if "#" not in n]
        hooks += [(n, put) for n in self.outs]
        logits = self.model.run_with_hooks(self.tokens, fwd_hooks=hooks)
        pre = {out: pre_activations(s, inputs[s.cfg.metadata.hook_name])[0]
               for out, s in self.outs.items()}
        return pre, logits


@pytest.fixture(scope="module")
def case(tiny_model, eval_tokens):
    tokens = eval_tokens[:1, :POS + 2]
    _, cache = tiny_model.run_with_cache(tokens)
    saes = [
        random_jumprelu(cache, "blocks.0.ln2.hook_normalized", hook_out="blocks.0.hook_mlp_out",
                        seed=1),
        random_jumprelu(cache, "blocks.1.hook_resid_post", seed=2),
        random_jumprelu(cache, "blocks.2.ln2.hook_normalized", hook_out="blocks.2.hook_mlp_out",
                        seed=3),
        random_jumprelu(cache, "blocks.3.attn.hook_z", seed=4),
    ]
    metric = logit_diff(POS, int(tokens[0, POS + 1]), 7)
    graph = feature_graph(tiny_model, saes, tokens, metric, batch_size=64, progress=False)
    return tokens, saes, metric, graph, BruteForce(tiny_model, saes, tokens)


def _source_key(brute, node):
    """The (value name, index) a graph node corresponds to in the brute-force model."""
    if node.kind == "embedding":
        return "hook_embed", (node.position,)
    out = {("transcoder", 0): "blocks.0.hook_mlp_out", ("res", 1): "blocks.1.hook_resid_post",
           ("transcoder", 2): "blocks.2.hook_mlp_out", ("att", 3): "blocks.3.attn.hook_z",
           ("mlp", 1): "blocks.1.hook_mlp_out", ("mlp", 3): "blocks.3.hook_mlp_out"}[
        (node.site, node.layer)]
    if node.kind == "feature":
        return out + "#f", (node.position, node.feature)
    return (out if out in brute.values else out + "#e"), (node.position,)


def test_node_set_matches_the_prompt(case):
    tokens, saes, metric, graph, brute = case
    kinds = [n.kind for n in graph.nodes]
    assert kinds.count("embedding") == tokens.shape[1]
    assert graph.nodes[-1].kind == "metric"
    n_active = sum(int(brute.values[k].ne(0).sum()) for k in brute.values if k.endswith("#f"))
    assert kinds.count("feature") == n_active
    # Errors: one per position for each of 4 sites and the 2 MLPs with no transcoder.
    assert kinds.count("error") == 6 * tokens.shape[1]
    assert graph.nodes[-1].activation == pytest.approx(float(metric(brute.run(brute.values)[1])),
                                                       abs=1e-4)


def test_edges_equal_brute_force_direct_effects(case):
    _, _, _, graph, brute = case
    clean_pre, _ = brute.run(brute.values)
    out_of = {("transcoder", 0): "blocks.0.hook_mlp_out", ("res", 1): "blocks.1.hook_resid_post",
              ("transcoder", 2): "blocks.2.hook_mlp_out", ("att", 3): "blocks.3.attn.hook_z"}
    # One target in each site that has inputs, at the metric position; every non-zero source.
    checked = 0
    for target_site in [("res", 1), ("transcoder", 2), ("att", 3)]:
        t = next(i for i, n in enumerate(graph.nodes) if n.kind == "feature"
                 and (n.site, n.layer) == target_site and n.position == POS)
        tn = graph.nodes[t]
        sources = torch.nonzero(graph.adjacency[t]).flatten().tolist()
        assert sources
        # Zeroing every source at once leaves the bias; each source's edge adds to the rest.
        zero_all = {k: v.clone() for k, v in brute.values.items()}
        for s in sources:
            name, idx = _source_key(brute, graph.nodes[s])
            zero_all[name][idx] = 0.0
        pre_none, _ = brute.run(zero_all)
        key = out_of[target_site]
        total = clean_pre[key][POS, tn.feature]
        rest = pre_none[key][POS, tn.feature]
        assert float(graph.adjacency[t].sum()) == pytest.approx(float(total - rest), abs=1e-3)
        for s in sources[:: max(1, len(sources) // 6)]:
            name, idx = _source_key(brute, graph.nodes[s])
            values = {k: v.clone() for k, v in brute.values.items()}
            values[name][idx] = 0.0
            pre, _ = brute.run(values)
            effect = float(total - pre[key][POS, tn.feature])
            assert float(graph.adjacency[t, s]) == pytest.approx(effect, rel=1e-3, abs=1e-5)
            checked += 1
    assert checked >= 12
    # No edges into sources-only nodes, and none from later layers to earlier ones.
    for i, n in enumerate(graph.nodes):
        if n.kind in ("error", "embedding"):
            assert not graph.adjacency[i].any()


def test_metric_edges_are_gradient_times_activation(case):
    _, _, metric, graph, brute = case
    values = {k: v.clone().requires_grad_(True) for k, v in brute.values.items()}
    _, logits = brute.run(values)
    grads = dict(zip(values, torch.autograd.grad(metric(logits), list(values.values()),
                                                 allow_unused=True), strict=True))
    row = graph.adjacency[-1]
    for s in torch.nonzero(row).flatten().tolist()[::5]:
        name, idx = _source_key(brute, graph.nodes[s])
        expected = (grads[name][idx] * brute.values[name][idx]).sum()
        assert float(row[s]) == pytest.approx(float(expected), rel=1e-3, abs=1e-5)


def _hand_graph():
    node = GraphNode
    nodes = (node("embedding", "embedding", None, 0, None, 1.0),
             node("feature", "transcoder", 0, 0, 5, 1.0),
             node("feature", "transcoder", 1, 0, 6, 1.0),
             node("feature", "transcoder", 0, 0, 7, 1.0),
             node("metric", "metric", None, None, None, 2.0))
    a = torch.zeros(5, 5)
    a[4, 1], a[4, 2] = 3.0, -1.0  # metric <- A (3), B (-1)
    a[1, 0] = 2.0  # A <- embedding
    a[2, 0], a[2, 3] = 1.0, 1.0  # B <- embedding, C
    return FeatureGraph(nodes, a, (2,))


def test_influence_and_pruning_on_a_hand_built_graph(tmp_path):
    graph = _hand_graph()
    # By hand: metric row normalised (A .75, B .25); B's row (emb .5, C .5).
    torch.testing.assert_close(graph.influence(),
                               torch.tensor([0.875, 0.75, 0.25, 0.125, 0.0]))
    pruned = graph.prune(node_threshold=0.8, edge_threshold=1.0)
    assert [n.id for n in pruned.nodes] == ["embedding@0", "transcoder.0@0#5", "metric"]
    assert pruned.adjacency.tolist() == [[0, 0, 0], [2.0, 0, 0], [0, 3.0, 0]]
    path = graph.to_json(tmp_path / "graph.json", token_strings=["<bos>"])
    data = json.loads(path.read_text())
    assert [n["id"] for n in data["nodes"]][-1] == "metric"
    assert data["edges"][0] == {"source": "transcoder.0@0#5", "target": "metric", "weight": 3.0}
    assert len(data["edges"]) == 5
    assert [p.name for p in tmp_path.iterdir()] == ["graph.json"]
