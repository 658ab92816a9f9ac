"""The sparse training step against the dense one and a float64 dense reference."""

from __future__ import annotations

import copy

import pytest
import torch
from sae_lens.saes.sae import TrainStepInput

import gemma_scope_ext.training.sparse_step as sparse_step
from gemma_scope_ext.saes.jumprelu import jumprelu, step
from gemma_scope_ext.training.decoder_grad import remove_parallel_grad
from gemma_scope_ext.training.sae import GemmaScopeTrainingSAE, GemmaScopeTrainingSAEConfig
from gemma_scope_ext.training.transcoder import (
    GemmaScopeTrainingTranscoder,
    GemmaScopeTrainingTranscoderConfig,
)

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = {"rtol": 1e-4, "atol": 1e-6}


def _sae(kind="sae", param="raw", d_in=12, d_sae=48, d_out=10, eps=0.05, seed=0, **cfg):
    torch.manual_seed(seed)
    common = {"d_in": d_in, "d_sae": d_sae, "jumprelu_bandwidth": eps, "input_scale": 0.5,
              "threshold_parametrisation": param, **cfg}  # fmt: skip
    if kind == "transcoder":
        sae = GemmaScopeTrainingTranscoder(GemmaScopeTrainingTranscoderConfig(d_out=d_out, **common))
    else:
        sae = GemmaScopeTrainingSAE(GemmaScopeTrainingSAEConfig(**common))
    theta = torch.rand(d_sae) * 0.3 + 0.05
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
        if param == "log":
            sae.log_threshold.copy_(theta.log())
        else:
            sae.threshold.copy_(theta)
    return sae


def _batch(sae, n=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    width = sae.cfg.d_in + (sae.d_out if isinstance(sae, GemmaScopeTrainingTranscoder) else 0)
    return torch.randn(n, width, generator=g) * 2


def _run(sae, x, mode, lam=0.1):
    """(loss, {name: grad}) of one training step with sparse_training=mode, on a copy."""
    sae = copy.deepcopy(sae)
    sae.cfg.sparse_training = mode
    out = sae.training_forward_pass(TrainStepInput(x, {"l0": lam}, None, 0, False))
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in sae.named_parameters()}


def _reference(sae, x, lam=0.1):
    """The dense step in float64, written from the definitions (the same estimators)."""
    p = {n: t.detach().double().requires_grad_() for n, t in sae.named_parameters()}
    xin, y = sae.training_batch(x.double())
    xs, ys = xin * sae.input_scale.double(), y * sae.target_scale.double()
    theta = p["log_threshold"].exp() if "log_threshold" in p else p["threshold"]
    z = xs @ p["W_enc"] + p["b_enc"]
    f = jumprelu(z, theta, sae.bandwidth)
    W_dec = remove_parallel_grad(p["W_dec"]) if sae.cfg.project_decoder_grad else p["W_dec"]
    mse = (f @ W_dec + p["b_dec"] - ys).pow(2).sum(-1).mean()
    loss = mse + lam * step(z, theta, sae.bandwidth).sum(-1).mean()
    loss.backward()
    return loss.detach(), {n: t.grad for n, t in p.items()}


def _trained(sae, steps=30):
    opt = torch.optim.Adam(sae.parameters(), lr=3e-3, betas=(0.0, 0.999))
    for i in range(steps):
        out = sae.training_forward_pass(TrainStepInput(_batch(sae, seed=100 + i), {"l0": 0.05},
                                                       None, i, False))  # fmt: skip
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    sae.complete_step()
    return sae


def _assert_same_step(sae, x, lam=0.1):
    dense, g_dense = _run(sae, x, "off", lam)
    sparse, g_sparse = _run(sae, x, "on", lam)
    ref_loss, g_ref = _reference(sae, x, lam)
    torch.testing.assert_close(sparse.loss, dense.loss, **TOL)
    torch.testing.assert_close(sparse.loss.double(), ref_loss, **TOL)
    torch.testing.assert_close(sparse.feature_acts, dense.feature_acts, **TOL)
    torch.testing.assert_close(sparse.sae_out, dense.sae_out, **TOL)
    assert set(g_sparse) == set(g_dense) == set(g_ref)
    for name in g_dense:
        torch.testing.assert_close(g_sparse[name], g_dense[name], **TOL, msg=name)
        torch.testing.assert_close(g_sparse[name].double(), g_ref[name], **TOL, msg=name)
    return dense, g_dense, g_sparse


@pytest.mark.parametrize("kind", ["sae", "transcoder"])
@pytest.mark.parametrize("param", ["raw", "log"])
@pytest.mark.parametrize("trained", [False, True])
def test_loss_and_every_gradient_equal_the_dense_step(kind, param, trained):
    sae = _sae(kind, param)
    if trained:
        sae = _trained(sae)
    x = _batch(sae)
    dense, g_dense, _ = _assert_same_step(sae, x)
    z, theta = dense.hidden_pre, sae.get_threshold().detach()
    band = ((z - theta) / sae.bandwidth).abs() < 0.5
    assert band.sum() > 0 and (band & (z <= theta)).sum() > 0  # the band holds inactive pairs
    assert 0 < (dense.feature_acts != 0).float().mean() < 0.9


def test_band_edges_fall_as_in_the_dense_step():
    """Pre-activations exactly at theta, theta +- eps/2 and just inside: all exact in binary."""
    eps, theta = 0.25, 0.5
    values = torch.tensor([0.375, 0.625, 0.5, 0.376, 0.624, 0.3, 0.9, 0.4999])
    d = values.numel()
    sae = _sae(d_in=d, d_sae=d, eps=eps, input_scale=1.0)
    with torch.no_grad():
        sae.threshold.fill_(theta)
        sae.b_enc.zero_()
        sae.W_enc.copy_(torch.stack([values.roll(i) for i in range(d)]))  # z = W_enc for x = I
    x = torch.eye(d)
    dense, g_dense, g_sparse = _assert_same_step(sae, x, lam=0.5)
    torch.testing.assert_close(dense.hidden_pre, sae.W_enc.detach(), rtol=0, atol=0)
    # Strictly inside only: 0.376, 0.624, 0.5, 0.4999 per token; the edges 0.375, 0.625 are out.
    in_band = ((dense.hidden_pre - theta) / eps).abs() < 0.5
    assert in_band.sum(-1).tolist() == [4] * d
    # The L0 term alone gives the threshold -(lam / n) / eps per in-band pair.
    assert (g_dense["threshold"] != 0).all()


def test_dropping_the_inactive_in_band_pairs_is_caught(monkeypatch):
    """Negative control: a kernel that forgets the band's lower half moves the threshold's gradient."""
    sae = _sae()
    x = _batch(sae)
    _, g_dense = _run(sae, x, "off")
    monkeypatch.setattr(sparse_step, "rectangle", lambda u: ((u >= 0) & (u < 0.5)).to(u.dtype))
    _, g_broken = _run(sae, x, "on")
    torch.testing.assert_close(g_broken["W_dec"], g_dense["W_dec"], **TOL)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(g_broken["threshold"], g_dense["threshold"], **TOL)


@pytest.mark.parametrize("near", [False, True])
def test_a_batch_where_no_latent_fires(near):
    sae = _sae()
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.fill_(-0.01 if near else -5.0)  # near: inactive but inside the band
        sae.threshold.fill_(0.0 if near else 1.0)
    x = _batch(sae)
    dense, g_dense, _ = _assert_same_step(sae, x)
    assert (dense.feature_acts == 0).all()
    assert (g_dense["threshold"] != 0).all() == near and (g_dense["W_enc"] == 0).all()


def test_hundreds_of_steps_give_the_dense_weights():
    runs = {}
    for mode in ("off", "on"):
        sae = _sae(d_in=8, d_sae=32, sparse_training=mode)
        opt = torch.optim.Adam(sae.parameters(), lr=1e-3, betas=(0.0, 0.999))
        for i in range(300):
            x = _batch(sae, n=32, seed=1000 + i)
            out = sae.training_forward_pass(TrainStepInput(x, {"l0": 0.02}, None, i, False))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
        sae.complete_step()
        runs[mode] = {n: p.detach().clone() for n, p in sae.named_parameters()}
    start = _sae(d_in=8, d_sae=32)
    assert (runs["off"]["W_enc"] - start.W_enc).abs().max() > 0.05  # training did move them
    for name, value in runs["off"].items():
        torch.testing.assert_close(runs["on"][name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_bf16_autocast_matches_the_dense_step_and_keeps_thresholds_fp32():
    sae = _sae(d_in=16, d_sae=64)
    x = _batch(sae, n=64)
    results = {}
    for mode in ("off", "on"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results[mode] = _run(sae, x, mode)
    ref_loss, g_ref = _reference(sae, x)
    (dense, g_dense), (sparse, g_sparse) = results["off"], results["on"]
    assert g_sparse["threshold"].dtype == torch.float32 and sparse.hidden_pre.dtype == torch.float32
    torch.testing.assert_close(sparse.hidden_pre, dense.hidden_pre, rtol=0, atol=0)
    for loss in (dense.loss, sparse.loss):
        torch.testing.assert_close(loss.double(), ref_loss, rtol=2e-2, atol=1e-3)
    for name, ref in g_ref.items():
        scale = ref.abs().max().item()
        diff = (g_sparse[name] - g_dense[name]).abs().max().item()
        assert diff <= 2e-2 * scale + 1e-4, (name, diff, scale)  # the same z: bf16 products only
        if name in ("threshold", "log_threshold"):
            continue  # bf16 z moves pairs across the band edges against float64's z
        for grads in (g_dense, g_sparse):
            err = (grads[name].double() - ref).abs().max().item()
            assert err <= 3e-2 * scale + 1e-4, (name, err, scale)


def test_auto_switches_by_measured_density(monkeypatch):
    sae = _sae(d_in=16, d_sae=64)
    calls = []
    real = sparse_step.sparse_training_step
    import gemma_scope_ext.training.sae as sae_module

    monkeypatch.setattr(sae_module, "sparse_training_step", lambda *a: calls.append(1) or real(*a))
    x = _batch(sae)

    def one_step():
        sae.training_forward_pass(TrainStepInput(x, {"l0": 0.1}, None, 0, False)).loss.backward()

    one_step()  # small: dense, density measured
    assert calls == [] and 0 < sae.pair_density < 1
    monkeypatch.setattr(sparse_step, "SPARSE_TRAIN_MIN_WORK", 0)
    monkeypatch.setitem(sparse_step.SPARSE_TRAIN_DENSITY_CUTOFF, "cpu", sae.pair_density / 2)
    one_step()
    assert calls == []  # too dense
    monkeypatch.setitem(sparse_step.SPARSE_TRAIN_DENSITY_CUTOFF, "cpu", 1.0)
    one_step()
    assert calls == [1]
    sae.hook_sae_acts_post.add_hook(lambda t, hook: t)  # a hook the sparse step would bypass
    one_step()
    assert calls == [1]


def test_config_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="sparse_training"):
        GemmaScopeTrainingSAEConfig(d_in=4, d_sae=8, sparse_training="always")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pair_dot_products_equal_the_dense_product_at_the_pairs(dtype):
    g = torch.Generator().manual_seed(0)
    R, W = torch.randn(6, 20, generator=g), torch.randn(30, 20, generator=g)
    tok, lat = (torch.rand(6, 30, generator=g) < 0.2).nonzero(as_tuple=True)
    dots = sparse_step._pair_dots(R.to(dtype), W.to(dtype), tok, lat)
    expected = (R.to(dtype).double() @ W.to(dtype).double().T)[tok, lat]
    torch.testing.assert_close(dots.double(), expected, rtol=1e-2 if dtype != torch.float32 else
                               1e-5, atol=1e-2 if dtype != torch.float32 else 1e-5)  # fmt: skip
    with pytest.raises(AssertionError):  # the pairs matter: shifted latents give other values
        torch.testing.assert_close(dots.double(), (R.double() @ W.double().T)[tok, (lat + 1) % 30],
                                   rtol=1e-2, atol=1e-2)  # fmt: skip


def test_sae_lens_trainer_drives_the_sparse_step_unchanged():
    """SAELens's own SAETrainer: the same weights after training with the step sparse or dense."""
    import contextlib
    import io

    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    steps, batch = 40, 64
    weights = {}
    for mode in ("off", "on"):
        sae = _sae(d_in=12, d_sae=48, sparse_training=mode)
        gen = torch.Generator().manual_seed(5)
        data = iter([torch.randn(batch, 12, generator=gen) * 2 for _ in range(steps + 5)])
        cfg = SAETrainerConfig(
            n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False,
            total_training_samples=steps * batch, device="cpu", autocast=False, lr=3e-3,
            lr_end=3e-3, lr_scheduler_name="constant", lr_warm_up_steps=0, adam_beta1=0.0,
            adam_beta2=0.999, lr_decay_steps=0, n_restart_cycles=1,
            train_batch_size_samples=batch, dead_feature_window=1000,
            feature_sampling_window=2000, logger=LoggingConfig(log_to_wandb=False),
            n_batches_for_norm_estimate=1,
        )  # fmt: skip
        with contextlib.redirect_stderr(io.StringIO()):
            SAETrainer(cfg, sae, data).fit()
        weights[mode] = {n: p.detach().clone() for n, p in sae.named_parameters()}
    assert (weights["off"]["W_enc"] - _sae(d_in=12, d_sae=48).W_enc).abs().max() > 0.01
    for name, value in weights["off"].items():
        torch.testing.assert_close(weights["on"][name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_rows_without_active_pairs_keep_a_zero_projected_gradient():
    """Half the latents never fire: their decoder rows get exactly zero (the projection is done
    in place from the pair dot products); the other rows lose their component along the row."""
    sae = _sae(d_sae=48)
    with torch.no_grad():
        sae.threshold[::2] = 1e3  # far above any z: no active pair, no in-band pair
    x = _batch(sae)
    _, g_dense, g_sparse = _assert_same_step(sae, x)
    assert (g_sparse["W_dec"][::2] == 0).all() and (g_sparse["W_dec"][1::2] != 0).any()
    along = (g_sparse["W_dec"] * sae.W_dec.detach()).sum(-1)
    torch.testing.assert_close(along, torch.zeros_like(along), rtol=0, atol=1e-6)
    # negative control: without the projection the firing rows keep a part along themselves
    unprojected = _sae(d_sae=48, project_decoder_grad=False)
    unprojected.load_state_dict(sae.state_dict())
    _, g_free = _run(unprojected, x, "on")
    assert (g_free["W_dec"] * sae.W_dec.detach()).sum(-1).abs().max() > 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_encoder_gradient_is_x_transposed_times_the_pair_gradients(dtype):
    g = torch.Generator().manual_seed(0)
    x, G = torch.randn(7, 5, generator=g), torch.randn(7, 30, generator=g)
    G = G * (torch.rand(7, 30, generator=g) < 0.2)
    lat, tok = G.T.nonzero(as_tuple=True)  # grouped by latent
    out = sparse_step._encoder_grad(x.to(dtype), tok, lat, G[tok, lat].to(dtype), 30)
    assert out.shape == (5, 30) and out.is_contiguous()  # the parameter's layout: no copy later
    expected = x.to(dtype).double().T @ G.to(dtype).double()
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(out.double(), expected, **tol)
    with pytest.raises(AssertionError):  # the pairs matter: values at the wrong pairs differ
        swapped = sparse_step._encoder_grad(x.to(dtype), tok, lat, G[tok, lat].flip(0).to(dtype), 30)
        torch.testing.assert_close(swapped.double(), expected, **tol)


def test_grouping_order_is_the_stable_sort_by_latent():
    g = torch.Generator().manual_seed(0)
    lat = torch.randint(0, 50, (400,), generator=g)
    order = sparse_step._grouping_order(lat, 50)
    assert torch.equal(order, torch.argsort(lat, stable=True))
    assert (lat[order].diff() >= 0).all()
    within = order.view(-1)[lat[order] == 7]
    assert (within.diff() > 0).all()  # stable: a latent's pairs keep their token order
    assert not torch.equal(order, torch.argsort(lat, descending=True, stable=True))  # it can fail
