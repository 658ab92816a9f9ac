"""The attribution graph on the tiny Gemma 3: Gemma Scope 2's transcoders read ``mlp.hook_in`` (the
MLP's input after the RMSNorm gain), and every checked edge equals the brute-force frozen model's
direct effect, as on Gemma 2 (``test_graph.py``, whose brute-force model this reuses)."""

from __future__ import annotations

import pytest
import torch

from gemma_scope_ext.circuits.attribution import logit_diff
from gemma_scope_ext.circuits.graph import feature_graph
from gemma_scope_ext.circuits.splice import site_of
from gemma_scope_ext.circuits.targets import LogitTarget
from tests.circuits.test_graph import POS, TOKEN, BruteForce, random_jumprelu

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def case(tiny_gemma3_model):
    from gemma_scope_ext.models.text import sample_tokens

    model = tiny_gemma3_model
    tokens = sample_tokens(model.tokenizer, 1, POS + 2, split="eval")
    _, cache = model.run_with_cache(tokens)
    saes = [
        random_jumprelu(cache, "blocks.0.mlp.hook_in", hook_out="blocks.0.hook_mlp_out", seed=1),
        random_jumprelu(cache, "blocks.1.hook_resid_post", seed=2),
        random_jumprelu(cache, "blocks.2.mlp.hook_in", hook_out="blocks.2.hook_mlp_out", seed=3),
        random_jumprelu(cache, "blocks.3.attn.hook_z", seed=4),
    ]
    metric = logit_diff(POS, int(tokens[0, POS + 1]), TOKEN)
    graph = feature_graph(model, saes, tokens, metric, batch_size=64, progress=False,
                          targets=[LogitTarget(TOKEN, POS, weight=0.5)], softcap="pre")  # fmt: skip
    outs = {site_of(s.cfg.metadata.hook_name): s.cfg.metadata.hook_name_out or
            s.cfg.metadata.hook_name for s in saes}  # fmt: skip
    return graph, BruteForce(model, saes, tokens), outs


def _source_key(brute, outs, node):
    if node.kind == "embedding":
        return "hook_embed", (node.position,)
    out = outs.get((node.site, node.layer), f"blocks.{node.layer}.hook_mlp_out")
    if node.kind == "feature":
        return out + "#f", (node.position, node.feature)
    return (out if out in brute.values else out + "#e"), (node.position,)


def _ablated(brute, outs, graph, sources):
    values = {k: v.clone() for k, v in brute.values.items()}
    for s in sources:
        name, idx = _source_key(brute, outs, graph.nodes[s])
        values[name][idx] = 0.0
    return brute.run(values)


def test_transcoders_at_mlp_hook_in_are_gemma_scope_transcoders(case):
    graph, brute, outs = case
    assert ("transcoder", 0) in outs and ("transcoder", 2) in outs
    sites = {(n.site, n.layer) for n in graph.nodes if n.kind == "feature"}
    assert {("transcoder", 0), ("transcoder", 2)} <= sites
    # Errors: one per position for each SAE's site and each of the 4 MLPs with no transcoder.
    n_pos = brute.tokens.shape[1]
    assert [n.kind for n in graph.nodes].count("error") == (4 + 4) * n_pos


def test_edges_equal_brute_force_direct_effects(case):
    graph, brute, outs = case
    clean_pre, _, _ = brute.run(brute.values)
    adjacency, checked = graph.adjacency, 0
    for target_site in [("res", 1), ("transcoder", 2), ("att", 3)]:
        t = next(i for i, n in enumerate(graph.nodes) if n.kind == "feature"
                 and (n.site, n.layer) == target_site and n.position == POS)  # fmt: skip
        feature = graph.nodes[t].feature
        sources = torch.nonzero(adjacency[t]).flatten().tolist()
        assert sources
        key = outs[target_site]
        total = clean_pre[key][POS, feature]
        rest = _ablated(brute, outs, graph, sources)[0][key][POS, feature]
        assert float(adjacency[t].sum()) == pytest.approx(float(total - rest), abs=1e-3)
        for s in sources[:: max(1, len(sources) // 6)]:
            effect = float(total - _ablated(brute, outs, graph, [s])[0][key][POS, feature])
            assert float(adjacency[t, s]) == pytest.approx(effect, rel=1e-3, abs=1e-5)
            checked += 1
    assert checked >= 12


def test_logit_edges_are_exact_direct_effects(case):
    """Gemma 3 has no final soft-cap: the logit node reads the logits the model reports."""
    graph, brute, outs = case
    _, logits, clean = brute.run(brute.values)
    assert (logits[0] - clean).abs().max() < 1e-4

    def demeaned(pre):
        return float(pre[POS, TOKEN].detach() - pre[POS].detach().mean())

    row = graph.adjacency[-1]
    sources = torch.nonzero(row).flatten().tolist()
    assert len(sources) > 20
    none = _ablated(brute, outs, graph, sources)[2]
    assert float(row.sum()) == pytest.approx(demeaned(clean) - demeaned(none), abs=1e-3)
    for s in sources[:: max(1, len(sources) // 8)]:
        pre = _ablated(brute, outs, graph, [s])[2]
        assert float(row[s]) == pytest.approx(demeaned(clean) - demeaned(pre), rel=1e-3, abs=1e-5)


def test_the_pre_gain_hook_would_give_other_edges(case, tiny_gemma3_model):
    """Negative control: the same transcoder read at ln2.hook_normalized (Gemma Scope 1's input)
    sees other activations, so its features and edges differ."""
    graph, brute, _ = case
    sae = brute.saes[2]
    cache = brute.cache
    right = sae.encode(cache["blocks.2.mlp.hook_in"])
    wrong = sae.encode(cache["blocks.2.ln2.hook_normalized"])
    assert (right - wrong).abs().max() > 0.1 * right.abs().max()
