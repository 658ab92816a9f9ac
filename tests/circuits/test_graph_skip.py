"""feature_graph with skip transcoders: their x W_skip^T path carries upstream effects downstream,
and every edge equals the brute-force direct effect in the frozen model with the skip path live
(``BruteForce`` of test_graph.py adds it)."""

from __future__ import annotations

import pytest
import torch

from gemma_scope_ext.circuits.graph import feature_graph
from gemma_scope_ext.circuits.targets import LogitTarget
from gemma_scope_ext.saes.skip_transcoder import GemmaScopeSkipTranscoder
from tests.circuits.test_graph import POS, TOKEN, BruteForce, _ablated, random_jumprelu


def _with_skip(plain, seed):
    params = {k: v.detach() for k, v in plain.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    params["W_skip"] = torch.randn(plain.cfg.d_out, plain.cfg.d_in, generator=g) * 0.3
    meta = plain.cfg.metadata
    return GemmaScopeSkipTranscoder.from_params(params, hook_name=meta.hook_name,
                                                hook_name_out=meta.hook_name_out)  # fmt: skip


@pytest.fixture(scope="module")
def case(tiny_model, eval_tokens):
    tokens = eval_tokens[:1, :POS + 2]
    _, cache = tiny_model.run_with_cache(tokens)
    saes = [
        _with_skip(random_jumprelu(cache, "blocks.0.ln2.hook_normalized",
                                   hook_out="blocks.0.hook_mlp_out", seed=1), 7),
        random_jumprelu(cache, "blocks.1.hook_resid_post", seed=2),
        _with_skip(random_jumprelu(cache, "blocks.2.ln2.hook_normalized",
                                   hook_out="blocks.2.hook_mlp_out", seed=3), 8),
    ]  # fmt: skip
    graph = feature_graph(tiny_model, saes, tokens, batch_size=64, progress=False,
                          targets=[LogitTarget(TOKEN, POS)], softcap="pre")  # fmt: skip
    return saes, graph, BruteForce(tiny_model, saes, tokens)


def test_skip_transcoder_edges_equal_brute_force_direct_effects(case):
    saes, graph, brute = case
    clean_pre, _, _ = brute.run(brute.values)
    out_of = {("res", 1): "blocks.1.hook_resid_post", ("transcoder", 2): "blocks.2.hook_mlp_out"}
    checked = 0
    for target_site, key in out_of.items():
        t = next(i for i, n in enumerate(graph.nodes) if n.kind == "feature"
                 and (n.site, n.layer) == target_site and n.position == POS)  # fmt: skip
        tn = graph.nodes[t]
        sources = torch.nonzero(graph.adjacency[t]).flatten().tolist()
        total = clean_pre[key][POS, tn.feature]
        pre_none, _, _ = _ablated(brute, graph, sources)
        assert float(graph.adjacency[t].sum()) == pytest.approx(
            float(total - pre_none[key][POS, tn.feature]), abs=1e-3)  # fmt: skip
        for s in sources[:: max(1, len(sources) // 6)]:
            pre, _, _ = _ablated(brute, graph, [s])
            effect = float(total - pre[key][POS, tn.feature])
            assert float(graph.adjacency[t, s]) == pytest.approx(effect, rel=1e-3, abs=1e-5)
            checked += 1
    assert checked >= 8


def test_the_skip_path_carries_edges_the_plain_transcoder_lacks(tiny_model, eval_tokens, case):
    saes, graph, _ = case
    tokens = eval_tokens[:1, :POS + 2]
    plain = [saes[0], saes[1], saes[2]]
    with torch.no_grad():  # the same transcoders without their skip path
        kept = [s.W_skip.clone() for s in (saes[0], saes[2])]
        for s in (saes[0], saes[2]):
            s.W_skip.zero_()
    try:
        without = feature_graph(tiny_model, plain, tokens, batch_size=64, progress=False,
                                targets=[LogitTarget(TOKEN, POS)], softcap="pre")  # fmt: skip
    finally:
        with torch.no_grad():
            for s, w in zip((saes[0], saes[2]), kept, strict=True):
                s.W_skip.copy_(w)
    # The embedding reaches layer 1 through transcoder 0's skip path as well as the residual
    # stream: its edges into the residual SAE's features change (negative control).
    t = next(i for i, n in enumerate(graph.nodes) if n.kind == "feature" and n.site == "res")
    emb = [i for i, n in enumerate(graph.nodes) if n.kind == "embedding"]
    assert graph.nodes[t] == without.nodes[t]
    assert (graph.adjacency[t, emb] - without.adjacency[t, emb]).abs().max() > 1e-3


def test_gemma_scope_2_skip_transcoder_on_gemma3_edges_equal_brute_force(one_thread):
    """On the tiny Gemma 3: a skip transcoder reading ``mlp.hook_in`` (after the RMSNorm gain) and a
    residual SAE downstream; the MLP input is detached at ``mlp.hook_in``, the transcoder's input
    stays live up to it. Until the models layer has Gemma 3's site table, the transcoder's nodes
    carry the hook name as their site."""
    from tests.helpers.tiny_gemma3 import tiny_gemma3

    _, model, tokens = tiny_gemma3()
    tokens, pos = tokens[:1], 10
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    tc = _with_skip(random_jumprelu(cache, "blocks.1.mlp.hook_in", hook_out="blocks.1.hook_mlp_out",
                                    d_sae=24, seed=21), 9)  # fmt: skip
    res = random_jumprelu(cache, "blocks.2.hook_resid_post", d_sae=24, seed=22)
    graph = feature_graph(model, [tc, res], tokens, targets=[LogitTarget(TOKEN, pos)],
                          softcap="pre", progress=False, batch_size=32)  # fmt: skip
    brute = BruteForce(model, [tc, res], tokens)
    outs = {("transcoder", 1): "blocks.1.hook_mlp_out", ("res", 2): "blocks.2.hook_resid_post",
            ("mlp", 0): "blocks.0.hook_mlp_out", ("mlp", 2): "blocks.2.hook_mlp_out"}  # fmt: skip

    def zeroed(node):
        values = {k: v.clone() for k, v in brute.values.items()}
        if node.kind == "embedding":
            values["hook_embed"][node.position] = 0.0
        else:
            out = outs[(node.site, node.layer)]
            name = out + "#f" if node.kind == "feature" else out if out in values else out + "#e"
            idx = (node.position, node.feature) if node.kind == "feature" else (node.position,)
            values[name][idx] = 0.0
        return brute.run(values)[0]["blocks.2.hook_resid_post"]

    clean = brute.run(brute.values)[0]["blocks.2.hook_resid_post"]
    t = next(i for i, n in enumerate(graph.nodes)
             if n.kind == "feature" and n.site == "res" and n.position == pos)  # fmt: skip
    feature = graph.nodes[t].feature
    sources = torch.nonzero(graph.adjacency[t]).flatten().tolist()
    kinds = {graph.nodes[s].site for s in sources}
    assert "transcoder" in kinds and "embedding" in kinds
    largest = float(graph.adjacency[t].abs().max())
    for s in sources:  # every one: features of the skip transcoder, its errors, the embeddings
        effect = float(clean[pos, feature] - zeroed(graph.nodes[s])[pos, feature])
        assert float(graph.adjacency[t, s]) == pytest.approx(effect, abs=1e-5 * max(1.0, largest))
