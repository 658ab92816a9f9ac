"""The feature pass gives the same records on a TransformerBridge as on a HookedTransformer.

``test_collect.py`` checks the HookedTransformer's records against brute force; the bridge's
activations differ from them by ~1e-6, so firing counts may differ only where an activation sits
within that distance of its threshold.
"""

from __future__ import annotations

import pytest
import torch

from gemma_scope_ext.features import FeatureConfig, collect_features
from tests.helpers.random_saes import four_site_saes

pytestmark = pytest.mark.usefixtures("one_thread")
CFG = FeatureConfig(top_k=4, n_bins=16, n_logits=5)


def test_collect_features_agrees_across_model_kinds(tiny_model, tiny_bridge, eval_tokens):
    tokens = eval_tokens[:4]
    _, cache = tiny_model.run_with_cache(tokens)
    saes = four_site_saes(cache)
    ref = collect_features(tiny_model, saes, tokens, config=CFG, batch_size=2, progress=False)
    ours = collect_features(tiny_bridge, saes, tokens, config=CFG, batch_size=2, progress=False)
    for a, b in zip(ours, ref, strict=True):
        assert a.info == b.info
        assert b.fires.sum() > 0
        assert (a.fires - b.fires).abs().max() <= 1, a.info.site
        torch.testing.assert_close(a.max_activation, b.max_activation, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a.act_sum, b.act_sum, atol=1e-3, rtol=1e-4)
        # The output side reads Gemma's norm gains (1 + w): the same scores on both kinds.
        assert set(a.output) == set(b.output) and b.output
        for k in b.output:
            torch.testing.assert_close(a.output[k], b.output[k], atol=1e-4, rtol=1e-4)
