"""A diverging run stops with a clear error, and the last checkpoint that passed the check is kept.

References: hand values for the criteria; a healthy SAE and a healthy run as negative controls; a
real blow-up (weights multiplied mid-run, and lr=1e6) for the positive cases.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
from datasets import Dataset
from sae_lens import LanguageModelSAETrainingRunner
from sae_lens.saes.sae import TrainingSAE, TrainStepInput

from gemma_scope_ext.models.text import sample_texts
from gemma_scope_ext.training import (
    GemmaScopeTrainingSAE,
    GemmaScopeTrainingSAEConfig,
    TrainingDivergedError,
    gemma_scope_sae_config,
)
from gemma_scope_ext.training.divergence import diagnose_step

pytestmark = pytest.mark.usefixtures("one_thread")


def _t(v):
    return torch.tensor(v)


def test_criteria_on_hand_values():
    target = torch.ones(4, 3)  # mean squared norm 3: the loss of predicting zero
    pre, thr = torch.full((4, 5), 0.5), torch.full((5,), 0.1)
    assert diagnose_step(_t(2.9e3), target, pre, thr, 1000.0) is None
    assert "3.1e+03 is more than 1000 times that of predicting zero (3)" in diagnose_step(
        _t(3.1e3), target, pre, thr, 1000.0)  # fmt: skip
    thr_big = thr.clone()
    thr_big[2] = 501.0
    assert "largest threshold 501 is more than 1000 times" in diagnose_step(
        _t(1.0), target, pre, thr_big, 1000.0)  # fmt: skip
    thr_big[2] = 499.0
    assert diagnose_step(_t(1.0), target, pre, thr_big, 1000.0) is None
    assert diagnose_step(_t(math.nan), target, pre, thr, None) == "the reconstruction loss is nan"
    thr_big[2] = math.inf
    assert diagnose_step(_t(1.0), target, pre, thr_big, None) == "a threshold is inf"
    assert diagnose_step(_t(1e9), target, pre, thr, None) is None  # ratio off: only non-finite


def _sae(seed=0, **cfg):
    torch.manual_seed(seed)
    return GemmaScopeTrainingSAE(GemmaScopeTrainingSAEConfig(d_in=8, d_sae=16, **cfg))


def _step(sae, x, step=3):
    return sae.training_forward_pass(TrainStepInput(x, {"l0": 1e-3}, None, step, False))


@pytest.mark.parametrize("corrupt, message", [
    (lambda s: s.W_enc.data.mul_(1e6), r"step 3: the reconstruction loss .* is more than 1000 times"),
    (lambda s: s.threshold.data.fill_(1e5), r"step 3: the largest threshold 1e\+05"),
    (lambda s: s.W_dec.data.fill_(math.nan), r"step 3: the reconstruction loss is nan"),
    (lambda s: s.threshold.data.fill_(math.inf), r"step 3: a threshold is inf"),
])  # fmt: skip
def test_a_blown_up_step_raises_and_a_healthy_one_does_not(corrupt, message):
    x = torch.randn(32, 8)
    sae = _sae()
    _step(sae, x)  # healthy: no error (the negative control)
    corrupt(sae)
    with pytest.raises(TrainingDivergedError, match=message + r".*lower the learning rate.*"
                                                              r"No checkpoint had been saved"):
        _step(sae, x)


def test_a_diverged_sae_is_not_saved(tmp_path):
    sae = _sae()
    _step(sae, torch.randn(32, 8))
    sae.save_model(tmp_path / "good")
    sae.W_enc.data.mul_(1e7)
    with pytest.raises(TrainingDivergedError, match=f"The last checkpoint, {tmp_path / 'good'}"):
        sae.save_model(tmp_path / "bad")
    with pytest.raises(TrainingDivergedError):
        sae.save_inference_model(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    sae.b_enc.data.fill_(math.nan)
    with pytest.raises(TrainingDivergedError, match="b_enc holds non-finite values"):
        sae.save_model(tmp_path / "bad")


def _runner(tiny_model, tmp_path, **overrides):
    logging.getLogger("sae_lens").setLevel(logging.ERROR)
    settings = dict(
        training_tokens=60 * 256, train_batch_size_tokens=256, context_size=64,
        store_batch_size_prompts=8, n_batches_in_buffer=4, lr=2e-3, lr_warm_up_steps=4,
        l0_warm_up_steps=10, l0_coefficient=1e-3, output_path=str(tmp_path / "out"),
        checkpoint_path=str(tmp_path / "ckpt"), n_checkpoints=2,
    )  # fmt: skip
    cfg = gemma_scope_sae_config("tiny-gemma2", "res", 2, 128, **{**settings, **overrides})
    dataset = Dataset.from_dict({"text": sample_texts("train", 200)})
    return cfg, LanguageModelSAETrainingRunner(cfg, override_model=tiny_model,
                                               override_dataset=dataset)  # fmt: skip


def test_a_run_that_blows_up_mid_way_stops_and_keeps_the_last_good_checkpoint(tiny_model, tmp_path):
    torch.manual_seed(0)
    cfg, runner = _runner(tiny_model, tmp_path)
    sae = runner.sae
    forward = sae.training_forward_pass

    def blow_up_at_step_30(step_input):  # as an lr spike would: the weights jump by 1e6
        if step_input.n_training_steps == 30:
            sae.W_enc.data.mul_(1e6)
        return forward(step_input=step_input)

    sae.training_forward_pass = blow_up_at_step_30
    with pytest.raises(TrainingDivergedError, match="training diverged at step 30") as err:
        runner.run()
    # Checkpoints come every 1/3 of the run (after 20 and 40 steps): the first was written.
    first = f"{cfg.checkpoint_path}/{21 * 256}"
    assert f"The last checkpoint, {first}, passed this check and is kept" in str(err.value)
    kept = TrainingSAE.load_from_disk(first)
    assert all(bool(torch.isfinite(p).all()) for p in kept.parameters())
    assert kept.W_enc.abs().max() < 10  # the weights before the blow-up
    assert not (tmp_path / "out").exists()  # nothing saved as if it had trained


def test_lr_1e6_stops_at_once(tiny_model, tmp_path):
    torch.manual_seed(0)
    cfg, runner = _runner(tiny_model, tmp_path, n_checkpoints=0)
    cfg.lr = 1e6  # past the config's check, as a hand-edited config would be
    with pytest.raises(TrainingDivergedError, match=r"training diverged at step [12]: the "
                                                    r"reconstruction loss .* times that of predicting zero"):
        runner.run()
    assert not (tmp_path / "out").exists()


def test_a_healthy_run_passes_every_check(tiny_model, tmp_path):
    torch.manual_seed(0)
    cfg, runner = _runner(tiny_model, tmp_path)
    runner.run()
    assert (tmp_path / "out" / "cfg.json").exists()
