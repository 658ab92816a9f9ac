"""Impossible training settings are refused before any model is loaded or activation read.

Each row names the setting and what was expected; the negative control is that the defaults (and
the edge values just inside each limit) pass the same checks.
"""

from __future__ import annotations

import os

import datasets
import pytest
import torch
from sae_lens import LoggingConfig

from gemma_scope_ext.models.text import sample_texts
from gemma_scope_ext.training import (
    GemmaScopeTrainingTranscoderConfig,
    TranscoderRunnerConfig,
    TranscoderTrainingRunner,
    gemma_scope_sae_config,
    gemma_scope_transcoder_config,
)

SMALL = dict(training_tokens=4096, train_batch_size_tokens=256, context_size=64,
             n_batches_in_buffer=4, output_path=None)  # fmt: skip


@pytest.fixture(autouse=True)
def no_model(monkeypatch):
    """Fail the test if SAELens would load a model: the checks must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad setting was refused")

    monkeypatch.setattr("sae_lens.llm_sae_training_runner.load_model", refuse)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"training_tokens": 0}, r"training_tokens must be a whole number >= 1, got 0"),
        ({"training_tokens": -5}, r"training_tokens must be a whole number >= 1, got -5"),
        ({"training_tokens": 100}, r"training_tokens=100 is less than one batch"),
        ({"train_batch_size_tokens": 0}, r"train_batch_size_tokens must be a whole number >= 1"),
        ({"context_size": 0}, r"context_size must be a whole number >= 1, got 0"),
        ({"context_size": 1025}, r"context_size=1025 is longer than tiny-gemma2 can hold "
                                 r"\(n_ctx=1024\); expected 1..1024"),
        ({"n_batches_in_buffer": 2}, r"buffer holds .* 2 x 64 = 128 tokens, fewer than one "
                                     r"training batch .*at least 4"),
        ({"lr": 0.0}, r"lr must be a finite number in \(0, 1.0\], got 0.0"),
        ({"lr": -1e-4}, r"lr must be a finite number in \(0, 1.0\]"),
        ({"lr": float("nan")}, r"lr must be a finite number"),
        ({"lr": 1e6}, r"lr must be a finite number in \(0, 1.0\], got 1000000.0"),
        ({"hook_name": "blocks.7.hook_resid_post"}, r"hook_name 'blocks.7.hook_resid_post' "
                                                    r"names layer 7, but tiny-gemma2 has layers 0..3"),
    ],
)
def test_impossible_sae_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        gemma_scope_sae_config("tiny-gemma2", "res", 2, 256, **{**SMALL, **overrides})


def test_settings_at_the_limits_pass():
    cfg = gemma_scope_sae_config("tiny-gemma2", "res", 3, 256, **{
        **SMALL, "context_size": 1024, "lr": 1.0, "training_tokens": 256,
        "n_batches_in_buffer": 1, "hook_name": "blocks.3.hook_resid_post"})  # fmt: skip
    assert cfg.context_size == 1024 and cfg.lr == 1.0
    gemma_scope_sae_config("gemma-2-2b", "res", 25, 16384, context_size=8192)


def test_output_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("")
    with pytest.raises(ValueError, match=r"output_path .*out is an existing file; expected a folder"):
        gemma_scope_sae_config("tiny-gemma2", "res", 2, 256, **{**SMALL, "output_path": str(tmp_path / "out")})
    with pytest.raises(ValueError, match=r"cannot be created: .*out is a file"):
        gemma_scope_sae_config("tiny-gemma2", "res", 2, 256,
                               **{**SMALL, "output_path": str(tmp_path / "out" / "sae")})


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_path_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(ValueError, match="cannot write to output_path"):
        gemma_scope_sae_config("tiny-gemma2", "res", 2, 256, **{**SMALL, "output_path": str(ro / "x")})


def test_a_new_output_path_is_not_created_by_the_check(tmp_path):
    target = tmp_path / "a" / "b"
    gemma_scope_sae_config("tiny-gemma2", "res", 2, 256, **{**SMALL, "output_path": str(target)})
    assert not (tmp_path / "a").exists()


def test_output_path_holding_an_sae_needs_overwrite(tmp_path):
    (tmp_path / "cfg.json").write_text("{}")
    settings = {**SMALL, "output_path": str(tmp_path)}
    with pytest.raises(FileExistsError, match="already holds a saved SAE; .*overwrite=True"):
        gemma_scope_sae_config("tiny-gemma2", "res", 2, 256, **settings)
    cfg = gemma_scope_sae_config("tiny-gemma2", "res", 2, 256, overwrite=True, **settings)
    assert cfg.sae.overwrite_saved is True
    tcfg = gemma_scope_transcoder_config("tiny-gemma2", 1, 64, overwrite=True, **settings)
    assert tcfg.sae.overwrite_saved is True


@pytest.mark.parametrize("d_out, message", [
    (64, r"d_out=64, but the transcoder predicts blocks.1.hook_mlp_out, which has width 128"),
    (0, r"d_out=0, but .* width 128"),
])  # fmt: skip
def test_transcoder_d_out_must_be_the_mlp_width(d_out, message):
    with pytest.raises(ValueError, match=message):
        gemma_scope_transcoder_config("tiny-gemma2", 1, 64, d_out=d_out, **SMALL)
    assert gemma_scope_transcoder_config("tiny-gemma2", 1, 64, d_out=128, **SMALL).sae.d_out == 128


def test_transcoder_config_refuses_the_same_settings():
    with pytest.raises(ValueError, match="train_batch_size_tokens must be a whole number"):
        gemma_scope_transcoder_config("tiny-gemma2", 1, 64, **{**SMALL, "train_batch_size_tokens": 0})


def _hand_built(d_out=128, hook_out="blocks.1.hook_mlp_out", **kwargs):
    sae = GemmaScopeTrainingTranscoderConfig(d_in=128, d_sae=32, d_out=d_out)
    settings = dict(
        sae=sae, model_name="tiny-gemma2", hook_name="blocks.1.ln2.hook_normalized",
        hook_name_out=hook_out, is_dataset_tokenized=False, streaming=False, context_size=32,
        training_tokens=20 * 64, train_batch_size_tokens=64, store_batch_size_prompts=8,
        n_batches_in_buffer=4, output_path=None, checkpoint_path=None,
        logger=LoggingConfig(log_to_wandb=False), verbose=False, model_from_pretrained_kwargs={},
    )  # fmt: skip
    return TranscoderRunnerConfig(**{**settings, **kwargs})


def test_runner_checks_a_hand_built_config_before_loading_the_model(tmp_path):
    (tmp_path / "f").write_text("")
    for cfg, message in [
        (_hand_built(hook_out="blocks.9.hook_mlp_out"), "names layer 9, but tiny-gemma2 has layers 0..3"),
        (_hand_built(context_size=2048), "context_size=2048 is longer than tiny-gemma2"),
        (_hand_built(output_path=str(tmp_path / "f")), "is an existing file"),
        (_hand_built(n_batches_in_buffer=1), "fewer than one training batch"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            TranscoderTrainingRunner(cfg)  # no model given: it would be loaded (no_model refuses)


def test_runner_checks_widths_and_hooks_against_the_model(tiny_model):
    torch.manual_seed(0)
    dataset = datasets.Dataset.from_dict({"text": sample_texts("train", 20)})
    with pytest.raises(ValueError, match=r"blocks.1.hook_mlp_out has width 128 on this model, "
                                         r"but the SAE expects 64"):
        TranscoderTrainingRunner(_hand_built(d_out=64), override_model=tiny_model,
                                 override_dataset=dataset)  # fmt: skip
    with pytest.raises(ValueError, match=r"the model has no hook 'blocks.1.hook_mlp_outt'"):
        TranscoderTrainingRunner(_hand_built(hook_out="blocks.1.hook_mlp_outt"),
                                 override_model=tiny_model, override_dataset=dataset)  # fmt: skip
    runner = TranscoderTrainingRunner(_hand_built(), override_model=tiny_model,
                                      override_dataset=dataset)  # fmt: skip
    assert runner.activations_store.next_pair().y.shape == (64, 128)
