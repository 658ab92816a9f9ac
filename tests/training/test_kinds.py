"""The runners train the same weights on both model kinds: SAELens's own runner with the Gemma
Scope recipe, and the transcoder runner (its logged evaluations included).

The HookedTransformer runs are checked against their references in ``test_sae.py`` and
``test_transcoder_runner.py``; the transcoder store and evaluator and the suite runner are checked
on both kinds in their own files.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from sae_lens import LanguageModelSAETrainingRunner, LoggingConfig

from gemma_scope_ext.models.text import sample_texts
from gemma_scope_ext.training import (
    TranscoderTrainingRunner,
    gemma_scope_sae_config,
    gemma_scope_transcoder_config,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(model, tmp_path, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    cfg = gemma_scope_sae_config(
        "tiny-gemma2", "res", 2, 64, training_tokens=12 * 256, train_batch_size_tokens=256,
        context_size=64, store_batch_size_prompts=8, n_batches_in_buffer=4,
        output_path=str(tmp_path), lr=2e-3, lr_warm_up_steps=2, l0_warm_up_steps=4,
        l0_coefficient=1e-3, threshold_parametrisation="raw", seed=seed,
    )  # fmt: skip
    runner = LanguageModelSAETrainingRunner(
        cfg, override_model=model,
        override_dataset=Dataset.from_dict({"text": sample_texts("train", 200)}),
    )  # fmt: skip
    return {k: v.detach().clone() for k, v in runner.run().state_dict().items()}


def test_sae_runner_trains_the_same_weights_on_a_bridge(tiny_model, tiny_bridge, tmp_path):
    ref = _train(tiny_model, tmp_path / "hooked", seed=7)
    ours = _train(tiny_bridge, tmp_path / "bridge", seed=7)
    assert set(ours) == set(ref)
    for k in ref:
        # 12 Adam steps on activations ~1e-6 apart: measured 9e-8 apart (another seed: 0.3).
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-4, atol=1e-5)
    # Negative control: another seed (another init and data order) trains other weights.
    other = _train(tiny_bridge, tmp_path / "other", seed=8)
    assert (other["W_enc"] - ref["W_enc"]).abs().max() > 1e-2


def _train_transcoder(model, tmp_path, seed: int) -> tuple[dict[str, torch.Tensor], list[dict]]:
    torch.manual_seed(seed)
    logger = LoggingConfig(log_to_wandb=True, wandb_log_frequency=4, eval_every_n_wandb_logs=2)
    cfg = gemma_scope_transcoder_config(
        "tiny-gemma2", 1, 64, context_size=32, training_tokens=16 * 128,
        train_batch_size_tokens=128, store_batch_size_prompts=8, n_batches_in_buffer=4,
        l0_coefficient=2e-3, l0_warm_up_steps=4, lr=2e-3, lr_warm_up_steps=2, seed=seed,
        output_path=str(tmp_path), n_eval_batches=1, eval_batch_size_prompts=4, logger=logger,
    )  # fmt: skip
    runner = TranscoderTrainingRunner(
        cfg, override_model=model,
        override_dataset=Dataset.from_dict({"text": sample_texts("train", 200)}),
    )  # fmt: skip
    logged: list[dict] = []
    evaluator = runner.evaluator
    runner.evaluator = lambda *args: logged.append(evaluator(*args)) or logged[-1]
    return {k: v.detach().clone() for k, v in runner.run().state_dict().items()}, logged


def test_transcoder_runner_trains_the_same_weights_on_a_bridge(tiny_model, tiny_bridge, tmp_path,
                                                               monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # logging on (so evaluations run), nothing sent
    ref, ref_logged = _train_transcoder(tiny_model, tmp_path / "hooked", seed=3)
    ours, our_logged = _train_transcoder(tiny_bridge, tmp_path / "bridge", seed=3)
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-4, atol=1e-5)
    assert len(our_logged) == len(ref_logged) > 0
    for a, b in zip(our_logged, ref_logged, strict=True):
        assert set(a) == set(b)
        for key in ("model_performance_preservation/delta_ce_loss", "reconstruction_quality/fvu"):
            assert a[key] == pytest.approx(b[key], abs=1e-4), key
    other, _ = _train_transcoder(tiny_bridge, tmp_path / "other", seed=4)  # negative control
    assert (other["W_enc"] - ref["W_enc"]).abs().max() > 1e-2
