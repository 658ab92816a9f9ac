"""evaluate refuses bad tokens, hooks, means and weights before running, with errors that say why."""

from __future__ import annotations

import pytest
import torch

from gemma_scope_ext.evals.metrics import evaluate
from tests.helpers.random_saes import random_jumprelu

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def sae(tiny_model, eval_tokens):
    _, cache = tiny_model.run_with_cache(eval_tokens[:2], names_filter=[HOOK])
    return random_jumprelu(cache, HOOK)


def test_a_valid_call_runs(tiny_model, eval_tokens, sae):
    assert evaluate(tiny_model, sae, eval_tokens[:2], progress=False).n_tokens > 0


@pytest.mark.parametrize("bad, message", [
    (lambda t, v: t.clone().index_fill_(1, torch.tensor([3]), v), r"ids from \d+ to 1024, but the "
     r"model's vocabulary is 0\.\.1023"),
    (lambda t, v: t.clone().index_fill_(1, torch.tensor([3]), -1), r"ids from -1 to"),
    (lambda t, v: t.float(), r"must be an integer tensor"),
    (lambda t, v: t[0], r"must be an integer tensor \[n_seqs, seq_len\], got \(64,\)"),
])
def test_bad_tokens_are_refused(tiny_model, eval_tokens, sae, bad, message):
    with pytest.raises(ValueError, match=message):
        evaluate(tiny_model, sae, bad(eval_tokens[:2], tiny_model.cfg.d_vocab), progress=False)


def test_rows_longer_than_the_context_are_refused(tiny_model, sae):
    n_ctx = tiny_model.cfg.n_ctx
    tokens = torch.full((1, n_ctx + 1), 5)
    with pytest.raises(ValueError, match=rf"rows have {n_ctx + 1} tokens, more than the model's "
                                         rf"context of {n_ctx}"):
        evaluate(tiny_model, sae, tokens, progress=False)


def test_a_hook_the_model_lacks_is_named(tiny_model, eval_tokens, sae):
    sae.cfg.metadata.hook_name = "blocks.9.hook_resid_post"
    try:
        with pytest.raises(ValueError, match=r"'blocks.9.hook_resid_post', which this model has no "
                                             r"hook for \(it has 4 layers\)"):
            evaluate(tiny_model, sae, eval_tokens[:2], progress=False)
    finally:
        sae.cfg.metadata.hook_name = HOOK


def test_wrong_shaped_means_are_refused(tiny_model, eval_tokens, sae):
    with pytest.raises(ValueError, match=r"means\['blocks.1.hook_resid_post'\] has shape \(64,\), "
                                         r"expected \(128,\)"):
        evaluate(tiny_model, sae, eval_tokens[:2], means={HOOK: torch.zeros(64)}, progress=False)
    with pytest.raises(ValueError, match="means has no entry"):
        evaluate(tiny_model, sae, eval_tokens[:2], means={}, progress=False)


def test_rows_with_a_single_real_token_say_what_the_loss_needs(tiny_model, sae):
    tokens = torch.tensor([[2, 50]])  # BOS and one token: nothing to predict
    with pytest.raises(ValueError, match=r"1 non-special tokens were evaluated but none is followed "
                                         r"by a next token"):
        evaluate(tiny_model, sae, tokens, progress=False)


def test_nan_thresholds_are_refused_not_reported_as_l0_zero(tiny_model, eval_tokens, sae):
    saved = sae.threshold.detach().clone()
    with torch.no_grad():
        sae.threshold.fill_(float("nan"))
    try:
        with pytest.raises(ValueError, match=r"NaN or infinite values in threshold"):
            evaluate(tiny_model, sae, eval_tokens[:2], progress=False)
    finally:
        with torch.no_grad():
            sae.threshold.copy_(saved)


def test_non_finite_activations_name_the_hook_and_batch(tiny_model, eval_tokens, sae):
    def poison(x, hook):
        if poison.calls == 1:  # the second forward: the first is the width probe
            x = x.clone()
            x[0, 3, 0] = float("inf")
        poison.calls += 1
        return x

    poison.calls = 0
    with tiny_model.hooks(fwd_hooks=[(HOOK, poison)]):
        with pytest.raises(ValueError, match=r"activations at 'blocks.1.hook_resid_post' in batch 0 "
                                             r"hold 1 NaN or infinite values"):
            evaluate(tiny_model, sae, eval_tokens[:2], ablations=False, progress=False)
