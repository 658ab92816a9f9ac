"""The Gemma Scope training recipe: analytic gradients, the decoder constraint, scale folding, saving."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from sae_lens import SAE
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.sae import SAEMetadata, TrainingSAE, TrainStepInput

import gemma_scope_ext  # noqa: F401  (registers the architecture)
from gemma_scope_ext.training.sae import GemmaScopeTrainingSAE, GemmaScopeTrainingSAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _sae(d_in=6, d_sae=10, seed=0, **cfg):
    torch.manual_seed(seed)
    sae = GemmaScopeTrainingSAE(GemmaScopeTrainingSAEConfig(d_in=d_in, d_sae=d_sae, **cfg))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    return sae


def _step_input(x, l0=0.0, step=0):
    return TrainStepInput(x, {"l0": l0}, None, step, False)


def test_defaults_are_gemma_scope_values():
    cfg = GemmaScopeTrainingSAEConfig(d_in=4, d_sae=8)
    assert (cfg.jumprelu_bandwidth, cfg.jumprelu_init_threshold) == (0.001, 0.001)
    assert cfg.l0_warm_up_steps == 10_000 and cfg.apply_b_dec_to_input is False
    assert cfg.input_scaling == "unit_mean_squared_norm" and cfg.decoder_init_norm == 1.0
    sae = GemmaScopeTrainingSAE(cfg)
    torch.testing.assert_close(sae.get_threshold(), torch.full((8,), 0.001))
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(8))
    torch.testing.assert_close(sae.W_enc, sae.W_dec.T)
    assert sae.b_enc.abs().sum() == 0 and sae.b_dec.abs().sum() == 0
    coeff = sae.get_coefficients()["l0"]
    assert (coeff.value, coeff.warm_up_steps) == (cfg.l0_coefficient, 10_000)


@pytest.mark.parametrize("param", ["log", "raw"])
def test_gradients_equal_the_analytic_estimator(param):
    eps, lam, s = 0.2, 0.05, 0.5
    sae = _sae(jumprelu_bandwidth=eps, threshold_parametrisation=param, input_scale=s)
    theta0 = torch.rand(10) * 0.4 + 0.1
    with torch.no_grad():
        if param == "log":
            sae.log_threshold.copy_(theta0.log())
        else:
            sae.threshold.copy_(theta0)
    x = torch.randn(32, 6)
    out = sae.training_forward_pass(_step_input(x, l0=lam))
    out.loss.backward()

    # Reference, written from the definitions with plain tensors.
    W_enc, W_dec = sae.W_enc.detach(), sae.W_dec.detach()
    b_enc, b_dec, theta = sae.b_enc.detach(), sae.b_dec.detach(), sae.get_threshold().detach()
    xs = x * s
    z = xs @ W_enc + b_enc
    gate = (z > theta).float()
    r = (z * gate) @ W_dec + b_dec - xs
    n = x.shape[0]
    assert out.loss.item() == pytest.approx(
        (r.pow(2).sum(-1).mean() + lam * gate.sum(-1).mean()).item(), rel=1e-5
    )
    d_f = 2 * r @ W_dec.T / n
    kernel = (((z - theta) / eps).abs() < 0.5).float()
    assert kernel.sum() > 0
    d_theta = (d_f * -(theta / eps) * kernel).sum(0) + (lam / n) * (-(1 / eps) * kernel).sum(0)
    d_z = d_f * gate  # the step passes nothing to z
    d_W_dec = (z * gate).T @ (2 * r / n)
    d_W_dec = d_W_dec - (d_W_dec * W_dec).sum(-1, keepdim=True) * W_dec  # unit rows
    if param == "log":
        torch.testing.assert_close(sae.log_threshold.grad, theta * d_theta, rtol=1e-4, atol=1e-6)
    else:
        torch.testing.assert_close(sae.threshold.grad, d_theta, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(sae.b_enc.grad, d_z.sum(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(sae.W_enc.grad, xs.T @ d_z, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(sae.W_dec.grad, d_W_dec, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(sae.b_dec.grad, (2 * r / n).sum(0), rtol=1e-4, atol=1e-6)


def test_decoder_gradient_is_the_projection_of_the_plain_gradient():
    x = torch.randn(16, 6)
    plain = _sae(project_decoder_grad=False, input_scale=1.0)
    projected = _sae(input_scale=1.0)
    for sae in (plain, projected):
        sae.training_forward_pass(_step_input(x, l0=0.01)).loss.backward()
    g, W = plain.W_dec.grad, plain.W_dec.detach()
    assert (g * W).sum(-1).abs().max() > 1e-3  # the plain gradient does have a radial part
    expected = g - (g * W).sum(-1, keepdim=True) / W.pow(2).sum(-1, keepdim=True) * W
    torch.testing.assert_close(projected.W_dec.grad, expected)


def _train(sae, steps=40, lr=1e-2):
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.0, 0.999))
    gen = torch.Generator().manual_seed(3)
    norms_seen = []
    for i in range(steps):
        x = torch.randn(64, sae.cfg.d_in, generator=gen) * 3
        out = sae.training_forward_pass(_step_input(x, l0=1e-3, step=i))
        norms_seen.append(sae.W_dec.detach().norm(dim=-1).clone())
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)  # as SAELens's trainer does
        opt.step()
        opt.zero_grad()
    return torch.stack(norms_seen)


def test_decoder_rows_stay_unit_norm_through_training(tmp_path):
    sae = _sae(d_in=8, d_sae=32)
    norms = _train(sae)
    torch.testing.assert_close(norms, torch.ones_like(norms))  # at every step's forward pass
    # Adam's per-coordinate scaling makes the last update not quite tangent: the norms are off by
    # at most one step, |delta| <= lr * sqrt(d_in), until the renormalisation that follows it.
    assert (sae.W_dec.norm(dim=-1) - 1).abs().max() < 1e-2 * 8**0.5
    sae.save_inference_model(tmp_path)  # applies the last step's renormalisation
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(32))

    free = _sae(d_in=8, d_sae=32, project_decoder_grad=False, normalise_decoder=False)
    free_norms = _train(free)
    assert (free_norms[-1] - 1).abs().max() > 0.1  # without the recipe the norms drift


def test_input_scale_is_fixed_from_the_first_batch():
    sae = _sae()
    x1, x2 = torch.randn(50, 6) * 7, torch.randn(50, 6)
    sae.training_forward_pass(_step_input(x1))
    expected = 1 / x1.pow(2).sum(-1).mean().sqrt()
    assert sae.input_scale.item() == pytest.approx(expected.item(), rel=1e-6)
    assert (x1 * sae.input_scale).pow(2).sum(-1).mean().item() == pytest.approx(1.0, rel=1e-5)
    sae.training_forward_pass(_step_input(x2))
    assert sae.input_scale.item() == pytest.approx(expected.item(), rel=1e-6)
    assert sae.target_scale.item() == sae.input_scale.item()


@pytest.mark.parametrize("b_dec_in", [False, True])
def test_folding_the_scale_changes_no_output(b_dec_in):
    sae = _sae(d_in=8, d_sae=24, apply_b_dec_to_input=b_dec_in, input_scale=0.3,
               jumprelu_init_threshold=0.05)  # fmt: skip
    with torch.no_grad():
        sae.W_enc.normal_()
    x = torch.randn(20, 8) * 5
    acts, out = sae.encode(x), sae(x)
    assert (acts > 0).any() and (acts == 0).any()

    stock = JumpReLUSAE(JumpReLUSAEConfig(d_in=8, d_sae=24, apply_b_dec_to_input=b_dec_in))
    stock.load_state_dict(sae.inference_state_dict())
    torch.testing.assert_close(stock.encode(x), acts, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stock(x), out, rtol=1e-5, atol=1e-5)

    sae.fold_scales()
    assert sae.input_scale.item() == 1.0
    torch.testing.assert_close(sae.encode(x), acts, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x), out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("param", ["log", "raw"])
def test_saved_artifact_is_stock_jumprelu_with_identical_outputs(tmp_path, param):
    sae = _sae(d_in=8, d_sae=24, threshold_parametrisation=param, jumprelu_init_threshold=0.05)
    sae.cfg.metadata = SAEMetadata(hook_name="blocks.1.hook_resid_post", model_name="tiny")
    _train(sae, steps=5)
    if param == "raw":  # the last optimiser step may leave raw thresholds below 0
        with torch.no_grad():
            sae.threshold[:6] = -0.5
    sae.save_inference_model(tmp_path)  # completes the step: unit rows, thresholds >= 0
    if param == "raw":
        assert (sae.threshold >= 0).all()
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" and cfg["apply_b_dec_to_input"] is False
    assert cfg["normalize_activations"] == "none"
    stock = SAE.load_from_disk(tmp_path)
    assert type(stock) is JumpReLUSAE
    x = torch.randn(30, 8) * 4
    torch.testing.assert_close(stock.encode(x), sae.encode(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stock(x), sae(x), rtol=1e-5, atol=1e-5)


def test_training_checkpoint_round_trips(tmp_path):
    sae = _sae(d_in=8, d_sae=24)
    _train(sae, steps=3)
    sae.save_model(tmp_path)
    loaded = TrainingSAE.load_from_disk(tmp_path)
    assert type(loaded) is GemmaScopeTrainingSAE
    assert loaded.input_scale.item() == sae.input_scale.item() and bool(loaded.scales_fixed)
    x = torch.randn(10, 8)
    torch.testing.assert_close(loaded(x), sae(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"jumprelu_bandwidth": 0.0}, "bandwidth"),
        ({"threshold_parametrisation": "exp"}, "threshold_parametrisation"),
        ({"input_scale": -1.0}, "input_scale"),
        ({"normalize_activations": "expected_average_only_in"}, "normalize_activations"),
        ({"l0_coefficient": -1.0}, "l0_coefficient"),
    ],
)
def test_config_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GemmaScopeTrainingSAEConfig(d_in=4, d_sae=8, **kwargs)


def test_zero_batch_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="unit mean squared norm"):
        _sae().training_forward_pass(_step_input(torch.zeros(4, 6)))


_STOCK_LOAD = """
import sys, torch
from sae_lens import SAE

sae = SAE.load_from_disk(sys.argv[1])
x = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save({"type": type(sae).__name__, "out": sae(x), "acts": sae.encode(x)}, sys.argv[3])
"""


def test_runner_trains_offline_on_the_tiny_model(tiny_model, tmp_path):
    """SAELens's own runner, unchanged, trains the recipe on the tiny Gemma 2's residual stream."""
    import subprocess
    import sys

    from datasets import Dataset
    from sae_lens import LanguageModelSAETrainingRunner

    from gemma_scope_ext.models.text import sample_texts
    from gemma_scope_ext.training import gemma_scope_sae_config

    out_dir = tmp_path / "sae"
    cfg = gemma_scope_sae_config(
        "tiny-gemma2", "res", 2, 256, training_tokens=40 * 256, train_batch_size_tokens=256,
        context_size=64, store_batch_size_prompts=8, n_batches_in_buffer=4, output_path=str(out_dir),
        lr=2e-3, lr_warm_up_steps=4, l0_warm_up_steps=10, l0_coefficient=1e-3,
        threshold_parametrisation="raw",
    )  # fmt: skip
    assert cfg.hook_name == "blocks.2.hook_resid_post" and cfg.sae.d_in == tiny_model.cfg.d_model
    assert (cfg.adam_beta1, cfg.adam_beta2, cfg.logger.log_to_wandb) == (0.0, 0.999, False)
    runner = LanguageModelSAETrainingRunner(
        cfg, override_model=tiny_model,
        override_dataset=Dataset.from_dict({"text": sample_texts("train", 400)}),
    )  # fmt: skip
    bos = tiny_model.tokenizer.bos_token_id
    assert bos in runner.activations_store.exclude_special_tokens.tolist()

    tokens = tiny_model.to_tokens("Return the number of items in the list.")
    _, cache = tiny_model.run_with_cache(tokens, names_filter=cfg.hook_name)
    x = cache[cfg.hook_name][0, 1:]  # BOS left out, as in training
    sae = runner.sae
    untrained = copy.deepcopy(sae)
    with torch.no_grad():
        untrained.estimate_scales(x, x)  # the copy only: training fixes its own from batch one
        fvu_before = ((untrained(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()

    trained = runner.run()
    assert trained is sae and type(sae) is GemmaScopeTrainingSAE
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(256))
    with torch.no_grad():
        ours, acts = sae(x), sae.encode(x)
        fvu_after = ((ours - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()
    assert fvu_after < 0.5 * fvu_before, (fvu_before, fvu_after)

    # The artifact opens in a fresh interpreter that never imports gemma_scope_ext.
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "load.py"
    script.write_text(_STOCK_LOAD)
    subprocess.run(
        [sys.executable, str(script), str(out_dir), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        check=True, capture_output=True,
    )  # fmt: skip
    stock = torch.load(tmp_path / "y.pt")
    assert stock["type"] == "JumpReLUSAE"
    torch.testing.assert_close(stock["acts"], acts, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(stock["out"], ours, rtol=1e-4, atol=1e-4)


def test_runner_config_for_gemma_2_2b_on_another_device_and_dtype():
    """The lines users change for a GPU run: device and dtype reach both the runner and the SAE."""
    from gemma_scope_ext import gemma_scope_sae_config, gemma_scope_transcoder_config

    cfg = gemma_scope_sae_config("gemma-2-2b", "att", 12, 16384, device="meta", dtype="bfloat16",
                                 dataset_path="monology/pile-uncopyrighted", streaming=True,
                                 l0_coefficient=1e-3)  # fmt: skip
    assert (cfg.device, cfg.sae.device, cfg.dtype, cfg.sae.dtype) == ("meta", "meta", "bfloat16",
                                                                      "bfloat16")  # fmt: skip
    assert (cfg.hook_name, cfg.sae.d_in, cfg.sae.d_sae) == ("blocks.12.attn.hook_z", 2048, 16384)
    assert cfg.sae.reshape_activations == "hook_z" and cfg.sae.l0_coefficient == 1e-3
    assert (cfg.lr, cfg.adam_beta1, cfg.adam_beta2, cfg.context_size) == (7e-5, 0.0, 0.999, 1024)
    tc = gemma_scope_transcoder_config("gemma-2-2b", 5, 16384, device="meta")
    assert (tc.device, tc.sae.device) == ("meta", "meta")
    assert (tc.hook_name, tc.hook_name_out) == ("blocks.5.ln2.hook_normalized", "blocks.5.hook_mlp_out")
    with pytest.raises(ValueError, match="follow from the site"):
        gemma_scope_sae_config("gemma-2-2b", "res", 12, 16384, d_in=10)
    with pytest.raises(ValueError, match="unknown settings"):
        gemma_scope_sae_config("gemma-2-2b", "res", 12, 16384, learning_rate=1e-3)
