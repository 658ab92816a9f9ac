"""A small attribution graph shared by the graph tests: two transcoders and a residual SAE on a
short prompt, with circuit-tracer's salient logit targets (at most three). One torch thread: on
small matrices more threads only spin."""

from __future__ import annotations

import pytest

from gemma_scope_ext.circuits.graph import feature_graph
from tests.helpers.random_saes import random_jumprelu

N_TOKENS = 9


@pytest.fixture(scope="module")
def small_saes(one_thread, tiny_model, eval_tokens):
    tokens = eval_tokens[:1, :N_TOKENS]
    _, cache = tiny_model.run_with_cache(tokens)
    return tokens, [
        random_jumprelu(cache, "blocks.0.ln2.hook_normalized", hook_out="blocks.0.hook_mlp_out",
                        d_sae=24, seed=11),
        random_jumprelu(cache, "blocks.1.hook_resid_post", d_sae=24, seed=12),
        random_jumprelu(cache, "blocks.2.ln2.hook_normalized", hook_out="blocks.2.hook_mlp_out",
                        d_sae=24, seed=13),
    ]


@pytest.fixture(scope="module")
def small_graph(one_thread, tiny_model, small_saes):
    tokens, saes = small_saes
    return feature_graph(tiny_model, saes, tokens, progress=False, max_n_logits=3,
                         batch_size=16)
