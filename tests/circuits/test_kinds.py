"""The circuit tools give the same answers on a TransformerBridge as on a HookedTransformer.

The graph on the HookedTransformer is checked edge by edge against brute force in ``test_graph.py``;
here the bridge's graph must equal it. On the bridge ``hook_resid_mid`` is the pre-MLP norm's
input and feeds nothing else, so writing there is refused; the last test shows why.
"""

from __future__ import annotations

import copy

import pytest
import torch

from gemma_scope_ext.circuits.graph import feature_graph
from gemma_scope_ext.circuits.splice import splice
from tests.helpers.random_saes import random_jumprelu

pytestmark = pytest.mark.usefixtures("one_thread")


def _edges_agree(a, b) -> bool:
    # Measured: 1e-7 of the largest edge apart; a 1% change to one decoder moves them by 1e-3.
    return bool((a.weights - b.weights).abs().max() <= 1e-5 * b.weights.abs().max())


def test_feature_graph_is_the_same_on_a_bridge(tiny_bridge, small_saes, small_graph):
    tokens, saes = small_saes
    graph = feature_graph(tiny_bridge, saes, tokens, progress=False, max_n_logits=3,
                          batch_size=16)
    assert [n.id for n in graph.nodes] == [n.id for n in small_graph.nodes]
    assert small_graph.weights.abs().max() > 0.1
    assert _edges_agree(graph, small_graph)
    torch.testing.assert_close(torch.tensor([n.activation for n in graph.nodes]),
                               torch.tensor([n.activation for n in small_graph.nodes]))
    # Negative control: a 1% change to one SAE's decoder is caught by the same comparison.
    nudged = copy.deepcopy(saes)
    with torch.no_grad():
        nudged[1].W_dec.mul_(1.01)
    other = feature_graph(tiny_bridge, nudged, tokens, progress=False, max_n_logits=3,
                          batch_size=16)
    assert not _edges_agree(other, small_graph)


def test_spliced_hook_names_are_the_same_on_both_kinds(tiny_model, tiny_bridge, small_saes):
    tokens, saes = small_saes
    seen = {}
    for kind, model in (("hooked", tiny_model), ("bridge", tiny_bridge)):
        with splice(model, saes) as sp:
            _, cache = model.run_with_cache(tokens)
            names = {k for k in cache if "hook_sae" in k}
            fired = []
            count = [(s.acts_hook, lambda x, hook, fired=fired: fired.append(x.shape))
                     for s in sp.sites]
            with model.hooks(fwd_hooks=count):
                model(tokens)
        seen[kind] = names, len(fired), {k: cache[k] for k in names}
        assert not any("hook_sae" in k for k in model.hook_dict)  # restored
    assert seen["hooked"][:2] == seen["bridge"][:2]
    assert seen["hooked"][1] == len(saes)
    for name, value in seen["hooked"][2].items():
        torch.testing.assert_close(seen["bridge"][2][name], value, atol=1e-4, rtol=1e-4)


def test_writing_resid_mid_is_refused_on_a_bridge(tiny_model, tiny_bridge, eval_tokens):
    tokens = eval_tokens[:1, :12]
    _, cache = tiny_model.run_with_cache(tokens)
    sae = random_jumprelu(cache, "blocks.1.hook_resid_mid", d_sae=16, seed=5)
    with pytest.raises(ValueError, match="hook_resid_mid.*TransformerBridge.*ln2.hook_in"):
        with splice(tiny_bridge, [sae]):
            pass
    clean = tiny_model(tokens)
    with splice(tiny_model, [sae], use_error_term=False):  # a HookedTransformer writes there
        assert (tiny_model(tokens) - clean).abs().max() > 1e-3

    # Why: zeroing hook_resid_mid moves a HookedTransformer's logits, but a bridge's far less
    # (only the pre-MLP norm's input changes, and the residual stream carries on untouched).
    def zero(x, hook):
        return torch.zeros_like(x)

    moved = {}
    for kind, model in (("hooked", tiny_model), ("bridge", tiny_bridge)):
        clean = model(tokens)
        edited = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_mid", zero)])
        moved[kind] = float((edited - clean).abs().max().detach())
    assert moved["hooked"] > 1.0
    assert moved["bridge"] < 0.5 * moved["hooked"]


def test_gradients_through_a_spliced_transcoder_are_the_same_on_a_bridge(
    tiny_model, tiny_bridge, eval_tokens
):
    """Without the error term the only path through the MLP is the transcoder's input: on the
    bridge that input must stay on the autograd graph (its norm computes hook values without
    autograd unless a hook is attached)."""
    tokens = eval_tokens[:1, :16]
    _, cache = tiny_model.run_with_cache(tokens)
    tc = random_jumprelu(cache, "blocks.1.ln2.hook_normalized", hook_out="blocks.1.hook_mlp_out",
                         d_sae=32, seed=6)
    grads = {}
    for kind, model in (("hooked", tiny_model), ("bridge", tiny_bridge)):
        seen = {}
        with splice(model, [tc], use_error_term=False), torch.enable_grad():
            keep = [("hook_embed", lambda x, hook, seen=seen: seen.setdefault("x", x))]
            logits = model.run_with_hooks(tokens, fwd_hooks=keep)
            (grads[kind],) = torch.autograd.grad(logits[0, -1].logsumexp(-1), [seen["x"]])
    assert grads["hooked"].abs().max() > 1e-3
    torch.testing.assert_close(grads["bridge"], grads["hooked"], atol=1e-5, rtol=1e-3)
