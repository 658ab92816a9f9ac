"""``evaluate`` gives the same numbers on a TransformerBridge as on a HookedTransformer.

The HookedTransformer's numbers are checked against plain hooks in ``test_metrics.py`` (where the
same checks also run on the bridge); here the two kinds are compared metric by metric, for an SAE
and for a transcoder, and a bridge whose weights differ slightly must fail the same comparison.
"""

from __future__ import annotations

import pytest
import torch

from gemma_scope_ext.evals.metrics import evaluate
from gemma_scope_ext.models.loading import tiny_gemma2
from tests.evals.test_metrics import random_jumprelu

pytestmark = pytest.mark.usefixtures("one_thread")

# fp32: measured 3e-7 nats and 3e-8 relative FVU apart; a 1% louder norm moves them 4e-4 / 7e-4.
LOSS_TOL = 2e-5
REL_TOL = 1e-4


def _agree(a, b) -> bool:
    losses = [(a.clean_loss, b.clean_loss), (a.delta_loss, b.delta_loss),
              (a.zero_ablation_loss, b.zero_ablation_loss),
              (a.mean_ablation_loss, b.mean_ablation_loss)]
    return (all(abs(x - y) <= LOSS_TOL for x, y in losses)
            and abs(a.fvu - b.fvu) <= REL_TOL * abs(b.fvu)
            and abs(a.mse - b.mse) <= REL_TOL * abs(b.mse)
            and abs(a.l0 - b.l0) <= 1e-3 * b.l0 and a.n_tokens == b.n_tokens)


@pytest.mark.parametrize(("hook_in", "hook_out"), [
    ("blocks.2.hook_resid_post", None),
    ("blocks.3.attn.hook_z", None),
    ("blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"),
])
def test_evaluate_agrees_across_model_kinds(tiny_model, tiny_bridge, eval_tokens, hook_in,
                                            hook_out):
    sae = random_jumprelu(tiny_model, eval_tokens, hook_in, hook_out=hook_out)
    ours = evaluate(tiny_bridge, sae, eval_tokens, batch_size=4, progress=False)
    ref = evaluate(tiny_model, sae, eval_tokens, batch_size=4, progress=False)
    assert abs(ref.delta_loss) > 1e-3
    assert (ours.hook_name, ours.hook_name_out) == (ref.hook_name, ref.hook_name_out)
    assert _agree(ours, ref)
    torch.testing.assert_close(ours.latent_frequency, ref.latent_frequency, atol=2e-3, rtol=0)


def test_a_different_bridge_fails_the_comparison(tiny_model, eval_tokens):
    sae = random_jumprelu(tiny_model, eval_tokens, "blocks.2.hook_resid_post")
    other = tiny_gemma2(as_bridge=True)  # a fresh copy, block 1's MLP output 1% louder
    with torch.no_grad():
        other.original_model.model.layers[1].post_feedforward_layernorm.weight.add_(0.01)
    ref = evaluate(tiny_model, sae, eval_tokens, batch_size=4, progress=False)
    assert not _agree(evaluate(other, sae, eval_tokens, batch_size=4, progress=False), ref)
