"""The streaming pass against brute force over all activations of the planted-feature SAE."""

from __future__ import annotations

import copy

import pytest
import torch

from gemma_scope_ext.features import FeatureConfig, collect_features
from gemma_scope_ext.features.ranked import reservoir_key
from tests.features.conftest import (
    CONSTANT,
    D_SAE,
    DEAD,
    PLANTED,
    SEQ_LEN,
    SPECIAL,
    brute_force_top,
    windows,
)
from tests.helpers.random_saes import four_site_saes

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = FeatureConfig(top_k=6, n_quantiles=4, per_quantile=3, oversample=2, context_before=4,
                    context_after=2, n_bins=32, n_logits=5, seed=3)  # fmt: skip


@pytest.fixture(scope="module")
def data(planted):
    # batch size 5 does not divide the 12 rows: the stream's batch edges fall mid-way
    return collect_features(planted.model, planted.sae, planted.tokens, config=CFG, batch_size=5,
                            progress=False)[0]  # fmt: skip


def test_densities_equal_a_direct_count(planted, data):
    keep = ~torch.isin(planted.tokens, torch.tensor(SPECIAL))
    assert data.n_tokens == int(keep.sum())
    assert torch.equal(data.fires, (planted.acts > 0).sum((0, 1)))
    assert data.fires[CONSTANT] == data.n_tokens and data.fires[DEAD] == 0
    assert torch.allclose(data.act_sum, planted.acts.double().sum((0, 1)), rtol=1e-6)


def test_top_contexts_equal_a_brute_force_scan(planted, data):
    for latent in range(D_SAE):
        want = brute_force_top(planted.acts, latent, CFG.top_k)
        view = data.latent(latent)
        assert [(c.row, c.position) for c in view.top] == [(r, p) for _, r, p in want], latent
        assert [c.activation for c in view.top] == pytest.approx([v for v, _, _ in want], abs=0)
        for c in view.top:
            ids, values = windows(planted.tokens, planted.acts, latent, c.row, c.position,
                                  CFG.context_before, CFG.context_after)  # fmt: skip
            assert list(c.token_ids) == ids and list(c.activations) == values
            assert c.token_ids[c.center] not in SPECIAL  # special tokens never fire


def test_planted_and_tied_latents(planted, data):
    top = data.latent(PLANTED).top[0]
    assert (top.row, top.position) == planted.peak
    assert top.activation == pytest.approx(1.0, abs=1e-5)
    # Every firing of CONSTANT ties at 2.0: the top-k are the earliest non-special tokens.
    keep = ~torch.isin(planted.tokens, torch.tensor(SPECIAL)).flatten()
    first = keep.nonzero().squeeze(1)[: CFG.top_k].tolist()
    got = [(c.row * SEQ_LEN + c.position) for c in data.latent(CONSTANT).top]
    assert got == first
    assert data.latent(DEAD).top == () and data.latent(DEAD).quantiles == ()


def test_histograms_equal_a_histogram_of_all_activations(planted, data):
    for latent in range(D_SAE):
        v = planted.acts[..., latent].flatten()
        v = v[v > 0]
        if v.numel() == 0:
            assert data.hist_counts[latent].sum() == 0
            continue
        e = int(data.hist_exponent[latent])
        assert 2.0 ** (e - 1) <= float(v.max()) < 2.0**e  # the smallest power of two above max
        edges = torch.arange(CFG.n_bins + 1, dtype=torch.float64) * 2.0**e / CFG.n_bins
        want = torch.histogram(v.double(), bins=edges).hist.long()
        assert torch.equal(data.hist_counts[latent], want), latent


def test_reservoir_equals_the_smallest_seeded_keys(planted, data):
    n_pos = planted.tokens.shape[1]
    for latent in range(D_SAE):
        fired = planted.acts[..., latent].flatten().nonzero().squeeze(1)
        keys = reservoir_key(fired, torch.full_like(fired, latent), CFG.seed)
        want = fired[keys.argsort()][: CFG.reservoir].tolist()
        rows, pos = data.sample["row"][latent], data.sample["pos"][latent]
        got = [int(r) * n_pos + int(p) for r, p in zip(rows, pos, strict=True) if r >= 0]
        assert got == want, latent
    # negative control: another seed's keys pick other firings
    fired = planted.acts[..., CONSTANT].flatten().nonzero().squeeze(1)
    other = fired[reservoir_key(fired, torch.full_like(fired, CONSTANT), CFG.seed + 1).argsort()]
    got = (data.sample["row"][CONSTANT] * n_pos + data.sample["pos"][CONSTANT]).tolist()
    assert other[: CFG.reservoir].tolist() != got


def test_quantile_examples_fall_in_their_bins(planted, data):
    checked = 0
    for latent in range(D_SAE):
        v = planted.acts[..., latent].flatten()
        v = v[v > 0]
        for q in data.latent(latent).quantiles:
            inside = ((v >= q.low) & (v < q.high)).sum()
            assert q.fraction == pytest.approx(float(inside) / len(v), abs=1e-12)
            for ex in q.examples:
                assert q.low <= ex.activation < q.high
                assert ex.activation == float(planted.acts[ex.row, ex.position, latent])
                checked += 1
        bins = data.latent(latent).quantiles
        if bins:
            assert sum(b.fraction for b in bins) == pytest.approx(1.0)
    assert checked > 100


def test_results_do_not_depend_on_batching(planted, data):
    other = collect_features(planted.model, planted.sae, list(planted.tokens.split(3)),
                             config=CFG, batch_size=12, progress=False)[0]  # fmt: skip
    for part in ("top", "sample"):
        for k in getattr(data, part):
            assert torch.equal(getattr(data, part)[k], getattr(other, part)[k]), (part, k)
    assert torch.equal(data.hist_counts, other.hist_counts)
    assert data.latent(3) == other.latent(3)


def test_each_site_kind_reads_its_own_hook(tiny_model, eval_tokens):
    """att (hook_z flattened head-major), res, mlp and a transcoder reading ln2.hook_normalized."""
    tokens = eval_tokens[:4]
    _, cache = tiny_model.run_with_cache(tokens)
    saes = four_site_saes(cache)
    datas = collect_features(tiny_model, saes, tokens, config=CFG, batch_size=3, progress=False)
    keep = ~torch.isin(tokens, torch.tensor(SPECIAL))
    for sae, d in zip(saes, datas, strict=True):
        hook = sae.cfg.metadata.hook_name
        # SAELens's own hook_z reshaping here, against the pass's head-major flattening
        acts = sae.encode(cache[hook]).detach() * keep[..., None]
        assert torch.equal(d.fires, (acts > 0).sum((0, 1))), hook
        assert torch.allclose(d.max_activation, acts.amax((0, 1)), atol=0), hook
    assert [d.info.site for d in datas] == ["att", "res", "mlp", "transcoder"]
    assert datas[3].info.hook_name_out == "blocks.3.hook_mlp_out"


def test_bad_input_is_refused_before_the_pass(planted):
    with pytest.raises(ValueError, match="does not have"):
        bad = copy.deepcopy(planted.sae)
        bad.cfg.metadata.hook_name = "blocks.9.hook_resid_post"
        collect_features(planted.model, bad, planted.tokens, progress=False)
    with pytest.raises(ValueError, match="integer"):
        collect_features(planted.model, planted.sae, [planted.tokens.float()], progress=False)
    with pytest.raises(ValueError, match="power of two"):
        FeatureConfig(n_bins=48)
