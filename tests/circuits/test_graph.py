"""The attribution graph: every edge checked against a brute-force frozen model built from cached
attention patterns and norm scales (feature targets, an exact pre-cap logit target, a metric);
post-cap logits against the same metric written by hand; clear errors for what it cannot do."""

from __future__ import annotations

import copy

import pytest
import torch
from sae_lens import JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig
from sae_lens.saes.sae import SAEMetadata

from gemma_scope_ext.circuits.attribution import logit_diff
from gemma_scope_ext.circuits.frozen import pre_activations
from gemma_scope_ext.circuits.graph import feature_graph
from gemma_scope_ext.circuits.targets import LogitTarget, MetricTarget
from tests.helpers.random_saes import random_jumprelu as _random_jumprelu

POS = 11
TOKEN = 7

pytestmark = pytest.mark.usefixtures("one_thread")


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


def _skip(sae, x):
    """A skip transcoder's x W_skip^T (live in its input), else 0."""
    return x @ sae.W_skip.T if hasattr(sae, "W_skip") else 0.0


class BruteForce:
    """The frozen linear model rebuilt by hand: patterns and norm scales replayed from a clean
    cache, every spliced site's output set to decode(features) + error from cached values (plus
    x W_skip^T of the live input for a skip transcoder)."""

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
            error = _flat(self.cache[out]) - sae.decode(f) - _skip(sae, x)
            self.values[out + "#e"] = error.detach()[0]

    def run(self, values):
        """Pre-activations of every SAE, the logits, and the pre-cap logits, for these values."""
        inputs = {}

        def replay(x, hook):
            return self.cache[hook.name]

        def capture(x, hook):
            inputs[hook.name] = _flat(x)

        def put(x, hook):
            if hook.name in self.outs:
                sae = self.outs[hook.name]
                out = sae.decode(values[hook.name + "#f"]) + values[hook.name + "#e"]
                out = out + _skip(sae, inputs[sae.cfg.metadata.hook_name][0])
                return out[None].reshape(x.shape)
            return values[hook.name][None]

        names = list(self.model.hook_dict)
        hooks = [(n, replay) for n in names if n.endswith("hook_pattern") or n.endswith("scale")]
        hooks += [(s.cfg.metadata.hook_name, capture) for s in self.saes]
        hooks += [(n, put) for n in self.values if "#" not in n]
        hooks += [(n, put) for n in self.outs]
        hooks += [("ln_final.hook_normalized", capture)]
        logits = self.model.run_with_hooks(self.tokens, fwd_hooks=hooks)
        pre = {out: pre_activations(s, inputs[s.cfg.metadata.hook_name])[0].detach()
               for out, s in self.outs.items()}
        # Pre-cap logits from the final norm's output, not from the graph's unembed hook.
        final = inputs["ln_final.hook_normalized"][0] * self.model.ln_final.w
        return pre, logits, final @ self.model.W_U + self.model.b_U


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
    metric = logit_diff(POS, int(tokens[0, POS + 1]), TOKEN)
    graph = feature_graph(tiny_model, saes, tokens, metric, batch_size=64, progress=False,
                          targets=[LogitTarget(TOKEN, POS, weight=0.5)], softcap="pre")
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


def _ablated(brute, graph, sources):
    values = {k: v.clone() for k, v in brute.values.items()}
    for s in sources:
        name, idx = _source_key(brute, graph.nodes[s])
        values[name][idx] = 0.0
    return brute.run(values)


def test_node_set_matches_the_prompt(case):
    tokens, saes, metric, graph, brute = case
    kinds = [n.kind for n in graph.nodes]
    assert kinds.count("embedding") == tokens.shape[1]
    assert [n.feature for n in graph.nodes if n.kind == "embedding"] == tokens[0].tolist()
    assert kinds[-2:] == ["metric", "logit"] and graph.nodes[-1].weight == 0.5
    n_active = sum(int(brute.values[k].ne(0).sum()) for k in brute.values if k.endswith("#f"))
    assert kinds.count("feature") == n_active
    # Errors: one per position for each of 4 sites and the 2 MLPs with no transcoder.
    assert kinds.count("error") == 6 * tokens.shape[1]
    with torch.no_grad():
        _, logits, pre = brute.run(brute.values)
    assert graph.nodes[-2].activation == pytest.approx(float(metric(logits)), abs=1e-4)
    assert graph.nodes[-1].activation == pytest.approx(float(pre[POS, TOKEN] - pre[POS].mean()),
                                                       abs=1e-4)
    # Listed in residual-stream order: no edge from a later layer into an earlier one.
    layer = torch.tensor([-1 if n.layer is None else n.layer for n in graph.nodes])
    r, s = torch.nonzero(graph.weights, as_tuple=True)
    t = graph.rows[r]
    feature_targets = torch.tensor([graph.nodes[i].kind == "feature" for i in t.tolist()])
    assert (layer[s][feature_targets] <= layer[t][feature_targets]).all()


def test_edges_equal_brute_force_direct_effects(case):
    _, _, _, graph, brute = case
    clean_pre, _, _ = brute.run(brute.values)
    out_of = {("transcoder", 0): "blocks.0.hook_mlp_out", ("res", 1): "blocks.1.hook_resid_post",
              ("transcoder", 2): "blocks.2.hook_mlp_out", ("att", 3): "blocks.3.attn.hook_z"}
    # One target in each site that has inputs, at the metric position; every non-zero source.
    checked = 0
    adjacency = graph.adjacency
    for target_site in [("res", 1), ("transcoder", 2), ("att", 3)]:
        t = next(i for i, n in enumerate(graph.nodes) if n.kind == "feature"
                 and (n.site, n.layer) == target_site and n.position == POS)
        tn = graph.nodes[t]
        sources = torch.nonzero(adjacency[t]).flatten().tolist()
        assert sources
        # Zeroing every source at once leaves the bias; each source's edge adds to the rest.
        pre_none, _, _ = _ablated(brute, graph, sources)
        key = out_of[target_site]
        total = clean_pre[key][POS, tn.feature]
        rest = pre_none[key][POS, tn.feature]
        assert float(adjacency[t].sum()) == pytest.approx(float(total - rest), abs=1e-3)
        for s in sources[:: max(1, len(sources) // 6)]:
            pre, _, _ = _ablated(brute, graph, [s])
            effect = float(total - pre[key][POS, tn.feature])
            assert float(adjacency[t, s]) == pytest.approx(effect, rel=1e-3, abs=1e-5)
            checked += 1
    assert checked >= 12
    # No edges into sources-only nodes.
    for i, n in enumerate(graph.nodes):
        if n.kind in ("error", "embedding"):
            assert not adjacency[i].any()


def test_pre_cap_logit_edges_are_exact_direct_effects(case):
    _, _, _, graph, brute = case
    _, _, clean = brute.run(brute.values)
    row = graph.adjacency[-1]
    sources = torch.nonzero(row).flatten().tolist()
    assert len(sources) > 20

    def demeaned(pre):
        return float(pre[POS, TOKEN] - pre[POS].mean())

    _, _, none = _ablated(brute, graph, sources)
    assert float(row.sum()) == pytest.approx(demeaned(clean) - demeaned(none), abs=1e-3)
    for s in sources[:: max(1, len(sources) // 8)]:
        _, _, pre = _ablated(brute, graph, [s])
        assert float(row[s]) == pytest.approx(demeaned(clean) - demeaned(pre), rel=1e-3, abs=1e-5)


def test_metric_edges_are_gradient_times_activation(case):
    _, _, metric, graph, brute = case
    values = {k: v.clone().requires_grad_(True) for k, v in brute.values.items()}
    _, logits, _ = brute.run(values)
    grads = dict(zip(values, torch.autograd.grad(metric(logits), list(values.values()),
                                                 allow_unused=True), strict=True))
    row = graph.adjacency[-2]
    for s in torch.nonzero(row).flatten().tolist()[::5]:
        name, idx = _source_key(brute, graph.nodes[s])
        expected = (grads[name][idx] * brute.values[name][idx]).sum()
        assert float(row[s]) == pytest.approx(float(expected), rel=1e-3, abs=1e-5)


def test_post_cap_logits_read_what_the_model_reports(tiny_model, case):
    tokens, saes, _, pre_graph, _ = case

    def demeaned(logits):  # the post-cap logit, demeaned, written as a plain metric
        return logits[0, POS, TOKEN] - logits[0, POS].mean()

    # A budget of 0 features: only the target rows, against every source node.
    graph = feature_graph(tiny_model, saes, tokens, progress=False, max_feature_nodes=0,
                          targets=[LogitTarget(TOKEN, POS, weight=1.0),
                                   MetricTarget("demeaned", demeaned)], softcap="post")
    logit, metric = graph.weights[-2], graph.weights[-1]
    assert graph.nodes[-2].activation == pytest.approx(graph.nodes[-1].activation, abs=1e-5)
    torch.testing.assert_close(logit, metric, rtol=1e-4, atol=1e-6)
    # Negative control: the pre-cap node is a different quantity (the soft-cap bends it).
    ids = {n.id: i for i, n in enumerate(pre_graph.nodes)}
    cols = torch.tensor([ids[n.id] for n in graph.nodes[:-2]])
    pre_row = pre_graph.adjacency[-1][cols]
    assert (pre_row - logit[:-2]).abs().max() > 1e-2 * pre_row.abs().max()


def test_clear_errors_before_any_work(tiny_model, eval_tokens, case):
    tokens, saes, metric, _, _ = case
    skip = JumpReLUSkipTranscoder(JumpReLUSkipTranscoderConfig(
        d_in=128, d_sae=8, d_out=128, apply_b_dec_to_input=False, metadata=SAEMetadata(
            hook_name="blocks.1.ln2.hook_normalized", hook_name_out="blocks.1.hook_mlp_out")))
    # SAELens's W_skip is read (test_graph_skip.py); a skip path stored otherwise is refused.
    skip.register_parameter("skip_weight", torch.nn.Parameter(torch.zeros(128, 128)))
    with pytest.raises(ValueError, match=r"has a skip connection \(skip_weight\) that is not"):
        feature_graph(tiny_model, [saes[0], skip], tokens, metric, progress=False)
    neurons = copy.deepcopy(saes[1])
    neurons.cfg.metadata.hook_name = "blocks.1.mlp.hook_post"
    with pytest.raises(ValueError, match="feature_graph supports SAEs at"):
        feature_graph(tiny_model, [neurons], tokens, metric, progress=False)
    with pytest.raises(ValueError, match="one prompt"):
        feature_graph(tiny_model, saes, eval_tokens[:2], metric, progress=False)
    with pytest.raises(ValueError, match="softcap must be"):
        feature_graph(tiny_model, saes, tokens, metric, progress=False, softcap="both")
