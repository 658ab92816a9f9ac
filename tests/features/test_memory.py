"""The pass's memory does not grow with the number of tokens: measured on the recorder's tensors."""

from __future__ import annotations

import pytest
import torch

from gemma_scope_ext.features import FeatureConfig, LatentRecorder, collect_latents
from tests.features.conftest import D_SAE

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = FeatureConfig(top_k=5, n_quantiles=2, per_quantile=2, context_before=3, context_after=1,
                    n_bins=16)  # fmt: skip


def _stream(tokens, repeats):
    for _ in range(repeats):  # a generator: the pass never sees more than one batch at a time
        yield from tokens.split(4)


def test_state_is_the_same_size_after_four_times_the_tokens(planted):
    short, long = (collect_latents(planted.model, [planted.sae], _stream(planted.tokens, r), CFG,
                                   progress=False)[0] for r in (1, 4))  # fmt: skip
    assert long.n_tokens == 4 * short.n_tokens
    assert long.state_bytes() == short.state_bytes()
    # ...and every byte is accounted for by the per-latent sizes: nothing per token hides in it
    slot = 8 + 8 + 4 + 8 + 8 + CFG.window * (4 + 4)  # score, slot, value, row, pos, window
    per_latent = (CFG.top_k + CFG.reservoir) * slot + CFG.n_bins * 8 + 4 + 8 + 8
    assert short.state_bytes() == D_SAE * per_latent


class _Leaky(LatentRecorder):
    """Negative control: a recorder that keeps every batch it sees."""

    def add(self, acts, tokens, keep):
        self.__dict__.setdefault("kept", []).append(acts.clone())
        super().add(acts, tokens, keep)


def test_the_measurement_sees_a_recorder_that_keeps_tokens(planted):
    sizes = []
    for repeats in (1, 2):
        rec = _Leaky(D_SAE, CFG, "cpu")
        for batch in _stream(planted.tokens, repeats):
            _, cache = planted.model.run_with_cache(batch, names_filter=[planted.sae.cfg.metadata.hook_name])
            acts = planted.sae.encode(cache[planted.sae.cfg.metadata.hook_name])
            rec.add(acts, batch, torch.ones_like(batch, dtype=torch.bool))
        sizes.append(rec.state_bytes())
    assert sizes[1] > sizes[0]
