"""Feature attribution: gradients against plain hooks, linear estimates against true ablations,
integrated gradients' completeness, and a planted feature found first."""

from __future__ import annotations

import pytest
import torch

from gemma_scope_ext.circuits.attribution import (
    ablate,
    attribution_patching,
    integrated_gradients,
    log_prob,
    logit_diff,
)
from tests.helpers.random_saes import four_site_saes, random_jumprelu

POS = 20  # metric position: past the sliding window of 16, so global and local layers differ


@pytest.fixture(scope="module")
def setup(tiny_model, eval_tokens):
    tokens = eval_tokens[:1, :24]
    _, cache = tiny_model.run_with_cache(tokens)
    saes = four_site_saes(cache)
    metric = log_prob(POS, int(tokens[0, POS + 1]))
    return tokens, cache, saes, metric


def _site_gradient(model, tokens, metric, hook):
    """d metric / d activation at ``hook`` in the clean model, by plain hooks."""
    saved = {}

    def keep(x, hook):
        saved["x"] = x

    with torch.enable_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[(hook, keep)])
        (grad,) = torch.autograd.grad(metric(logits), [saved["x"]])
    return saved["x"].detach(), grad


def test_attribution_patching_is_activation_times_clean_gradient(kind_model, setup):
    tokens, cache, saes, metric = setup
    table = attribution_patching(kind_model, saes, tokens, metric)
    assert table.metric_clean == pytest.approx(float(metric(kind_model(tokens))), abs=1e-5)
    # Residual SAE at layer 1: the node gradient is W_dec @ (the clean gradient at the site).
    x, g = _site_gradient(kind_model, tokens, metric, "blocks.1.hook_resid_post")
    sae = saes[1]
    f = sae.encode(x).detach()
    expected = f * (g @ sae.W_dec.detach().T)
    rows = [r for r in table if (r.site, r.layer) == ("res", 1) and r.feature is not None]
    assert len(rows) == int(f.ne(0).sum())
    for r in rows:
        assert r.attribution == pytest.approx(float(expected[0, r.position, r.feature]),
                                              rel=1e-4, abs=1e-7)
        assert r.activation == pytest.approx(float(f[0, r.position, r.feature]), rel=1e-6)
    error = x - sae.decode(f)
    err_row = table.find("res", 1, POS, None)
    assert err_row.attribution == pytest.approx(float((error * g)[0, POS].sum()), rel=1e-4)
    # Nothing after the metric position can matter.
    assert all(r.attribution == 0.0 for r in table if r.position > POS)
    ranked = [abs(r.attribution) for r in table]
    assert ranked == sorted(ranked, reverse=True)


def test_linear_estimates_track_true_ablations(kind_model, setup):
    tokens, _, saes, metric = setup
    table = attribution_patching(kind_model, saes, tokens, metric)
    top = table.features()[:10]

    def corr(scale):
        effects = torch.tensor([ablate(kind_model, saes, tokens, metric, [r], scale).effect
                                for r in top])
        estimates = torch.tensor([(1 - scale) * r.attribution for r in top])
        return torch.corrcoef(torch.stack([effects, estimates]))[0, 1], effects, estimates

    # Removing 10% of a feature is a small step: the first-order estimate should be near exact
    # (the second-order remainder is ~10% of the step's own size, so errors of a few percent).
    r_small, effects, estimates = corr(0.9)
    assert r_small > 0.99
    assert (effects - estimates).abs().max() < 0.1 * estimates.abs().max()
    # Full ablation leaves the linear regime but the ranking signal should survive: measured
    # 0.90-0.99 over two sets of tiny-model weights; a wrong sign or node would put it near 0.
    r_full, _, _ = corr(0.0)
    assert r_full > 0.8
    # Ablating a set: the effect is close to the summed attributions of its members. Downstream
    # JumpReLU features can cross their thresholds, so allow 20% of the members' total magnitude.
    result = ablate(kind_model, saes, tokens, metric, top[:4], scale=0.9)
    scale_of = 0.1 * sum(abs(r.attribution) for r in top[:4])
    assert abs(result.effect - 0.1 * sum(r.attribution for r in top[:4])) < 0.2 * scale_of


def test_integrated_gradients_is_complete(kind_model, setup):
    tokens, _, saes, metric = setup
    # Sites that add into the residual stream give smooth paths: a few nodes are enough.
    table = integrated_gradients(kind_model, saes[2:], tokens, metric, steps=8, progress=False)
    # Zeroing the whole residual stream sends the next RMSNorms through their steep small-norm
    # regime near alpha = 0, so that site needs more quadrature nodes.
    res_table = integrated_gradients(kind_model, saes[1:2], tokens, metric, steps=32,
                                     progress=False)
    checks = res_table.completeness + table.completeness
    assert [(c.site, c.layer) for c in checks] == [("res", 1), ("mlp", 2), ("transcoder", 3)]
    for c, t in zip(checks, [res_table, table, table], strict=True):
        assert abs(c.metric_change) > 1e-3
        assert c.attribution_sum == pytest.approx(c.metric_change, rel=0.01, abs=1e-4)
        # The rows of the site add up to the same sum.
        site_sum = sum(r.attribution for r in t if (r.site, r.layer) == (c.site, c.layer))
        assert site_sum == pytest.approx(c.attribution_sum, rel=1e-4, abs=1e-6)
    # Checked against an independent measurement: with every node of the transcoder at zero, the
    # MLP output is the decoder bias alone.
    b_dec = saes[3].b_dec.detach()
    zeroed = kind_model.run_with_hooks(
        tokens, fwd_hooks=[("blocks.3.hook_mlp_out", lambda x, hook: b_dec.expand_as(x))])
    change = table.metric_clean - float(metric(zeroed))
    assert table.completeness[-1].metric_change == pytest.approx(change, abs=1e-5)


def test_planted_feature_ranks_first(tiny_model, setup):
    tokens, cache, saes, _ = setup
    good, bad = int(tokens[0, POS + 1]), 7
    metric = logit_diff(POS, good, bad)
    x, g = _site_gradient(tiny_model, tokens, metric, "blocks.2.hook_resid_post")
    planted = random_jumprelu(cache, "blocks.2.hook_resid_post", seed=5)
    k, value = 17, 2.0
    u = g[0, POS] / g[0, POS].norm()
    with torch.no_grad():
        # Latent k fires only at POS (it reads a direction unique to that position's residual)
        # and writes along the direction that raises the logit difference fastest.
        direction = x[0, POS] - x[0].mean(0)
        planted.W_enc[:, k] = direction / direction.norm() ** 2 * (value + 1.0)
        planted.b_enc[k] = -1.0
        planted.W_dec[k] = u * x[0, POS].norm() * 0.1
    f = planted.encode(x)[0, :, k].detach()
    assert f[POS] > 0 and f[POS] == f.max()
    table = attribution_patching(tiny_model, saes[:2] + [planted], tokens, metric)
    first = table.features()[0]
    assert (first.site, first.layer, first.position, first.feature) == ("res", 2, POS, k)
    expected = float(f[POS] * (planted.W_dec[k].detach() @ g[0, POS]))
    assert first.attribution == pytest.approx(expected, rel=1e-4)
    true = ablate(tiny_model, saes[:2] + [planted], tokens, metric, [first]).effect
    runner_up = table.features()[1]
    assert true > 0
    assert true > abs(ablate(tiny_model, saes[:2] + [planted], tokens, metric, [runner_up]).effect)
