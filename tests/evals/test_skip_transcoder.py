"""``evaluate`` on a skip transcoder: its metrics equal plain hooks with the skip path included."""

from __future__ import annotations

import pytest
import torch

from gemma_scope_ext.evals.metrics import evaluate
from gemma_scope_ext.saes.skip_transcoder import GemmaScopeSkipTranscoder
from tests.evals.test_metrics import random_jumprelu, reference

HOOK_IN, HOOK_OUT = "blocks.2.ln2.hook_normalized", "blocks.2.hook_mlp_out"


class _WithSkip:
    """The plain reference's view of a skip transcoder on one fixed input ``x``."""

    def __init__(self, tc, skip_of_x):
        self.tc, self.skip_of_x = tc, skip_of_x

    def encode(self, x):
        return self.tc.encode(x)

    def decode(self, feats):
        return self.tc.decode(feats) + self.skip_of_x


def test_skip_transcoder_metrics_equal_plain_hooks(tiny_model, eval_tokens):
    plain = random_jumprelu(tiny_model, eval_tokens, HOOK_IN, hook_out=HOOK_OUT)
    params = {k: v.detach() for k, v in plain.state_dict().items()}
    g = torch.Generator().manual_seed(4)
    params["W_skip"] = torch.randn(plain.cfg.d_out, plain.cfg.d_in, generator=g) * 0.05
    tc = GemmaScopeSkipTranscoder.from_params(params, hook_name=HOOK_IN, hook_name_out=HOOK_OUT)
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(eval_tokens, names_filter=[HOOK_IN])
    ref = reference(tiny_model, _WithSkip(tc, tc.skip(cache[HOOK_IN])), eval_tokens, HOOK_IN,
                    HOOK_OUT)  # fmt: skip
    without = reference(tiny_model, plain, eval_tokens, HOOK_IN, HOOK_OUT)
    res = evaluate(tiny_model, tc, eval_tokens, batch_size=4, progress=False)
    assert res.delta_loss == pytest.approx(ref["delta"], abs=2e-5)
    assert res.fvu == pytest.approx(ref["fvu"], rel=1e-5)
    assert res.l0 == pytest.approx(ref["l0"])
    # Negative control: the same transcoder without its skip path scores differently.
    assert abs(ref["fvu"] - without["fvu"]) > 1e-2
