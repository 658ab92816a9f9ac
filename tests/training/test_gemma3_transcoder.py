"""Training a Gemma Scope 2 transcoder on the tiny Gemma 3: the paired store reads the MLP's own
input (``mlp.hook_in``, after the RMSNorm gain) and its output, and the runner's artifact is a stock
SAELens transcoder that SAELens's ``HookedSAETransformer`` splices at the same hooks.

References: the tiny model's own MLP applied to the stored inputs; SAELens's stock classes.
"""

from __future__ import annotations

import copy

import datasets
import pytest
import torch
from sae_lens import SAE, HookedSAETransformer, JumpReLUTranscoder

from gemma_scope_ext import hook_name, hook_name_out
from gemma_scope_ext.models.text import sample_texts, sample_tokens
from gemma_scope_ext.training import (
    TranscoderActivationsStore,
    TranscoderTrainingRunner,
    gemma_scope_transcoder_config,
)

LAYER = 2
SPECIAL = torch.tensor([0, 1, 2])  # pad, eos, bos

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset():
    return datasets.Dataset.from_dict({"text": sample_texts("train", 200)})


def test_the_config_reads_the_mlp_input_after_the_gain():
    cfg = gemma_scope_transcoder_config("tiny-gemma3", LAYER, 64, context_size=32)
    assert (cfg.hook_name, cfg.hook_name_out) == ("blocks.2.mlp.hook_in", "blocks.2.hook_mlp_out")
    assert (cfg.sae.d_in, cfg.sae.d_out) == (128, 128)


def test_pairs_are_the_mlps_input_and_output(tiny_gemma3_model, dataset):
    model = tiny_gemma3_model
    hook_in, hook_out = hook_name(model, "transcoder", LAYER), hook_name_out(model, "transcoder", LAYER)
    store = TranscoderActivationsStore.create(
        model, dataset, hook_in, hook_out, 128, 128, exclude_special_tokens=SPECIAL,
        streaming=False, context_size=32, n_batches_in_buffer=4, store_batch_size_prompts=4,
        train_batch_size_tokens=64,
    )  # fmt: skip
    x, y = store.next_pair()
    block = model.blocks[LAYER]
    with torch.no_grad():
        mlp = block.ln2_post(block.mlp(x[None]))[0]  # the input is the MLP's own: no gain to apply
        gemma2_style = block.ln2_post(block.mlp((x * block.ln2.w)[None]))[0]
    assert (mlp - y).abs().max() < 1e-4 * y.abs().max()
    assert (gemma2_style - y).abs().max() > 1e-2 * y.abs().max()  # negative control


def test_runner_trains_a_stock_transcoder_that_sae_lens_splices(tiny_gemma3_model, dataset, tmp_path):
    model = tiny_gemma3_model
    torch.manual_seed(0)
    cfg = gemma_scope_transcoder_config(
        "tiny-gemma3", LAYER, 128, context_size=32, training_tokens=150 * 128,
        train_batch_size_tokens=128, store_batch_size_prompts=16, n_batches_in_buffer=8,
        l0_coefficient=2e-3, l0_warm_up_steps=50, lr=2e-3, lr_warm_up_steps=10,
        output_path=str(tmp_path),
    )  # fmt: skip
    runner = TranscoderTrainingRunner(cfg, override_model=model, override_dataset=dataset)
    initial = copy.deepcopy(runner.sae)
    trained = runner.run()
    loaded = SAE.load_from_disk(tmp_path)
    assert type(loaded) is JumpReLUTranscoder
    meta = loaded.cfg.metadata
    assert (meta.hook_name, meta.hook_name_out, meta.model_name) == (
        "blocks.2.mlp.hook_in", "blocks.2.hook_mlp_out", "tiny-gemma3")  # fmt: skip

    tokens = sample_tokens(model.tokenizer, 4, 32, "eval")
    _, cache = model.run_with_cache(tokens, names_filter=[meta.hook_name, meta.hook_name_out])
    x, y = cache[meta.hook_name], cache[meta.hook_name_out]
    torch.testing.assert_close(loaded(x), trained(x).detach(), rtol=1e-5, atol=1e-5)

    def fvu(transcoder):
        with torch.no_grad():
            return ((transcoder(x) - y).pow(2).sum() / (y - y.mean((0, 1))).pow(2).sum()).item()

    initial.input_scale.copy_(trained.input_scale)  # the same scalars, untrained weights
    initial.target_scale.copy_(trained.target_scale)
    initial.scales_fixed.fill_(True)
    print(f"held-out FVU: trained {fvu(loaded):.3f}, untrained {fvu(initial):.3f}")
    assert fvu(loaded) < 0.6 * fvu(initial)  # it learned the MLP from its input

    # SAELens's HookedSAETransformer adds its own mlp.hook_in: the artifact splices there as is.
    hst = HookedSAETransformer(model.cfg, tokenizer=model.tokenizer)
    hst.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        clean = model(tokens)
        hst.add_sae(loaded, use_error_term=True)
        torch.testing.assert_close(hst(tokens), clean, rtol=1e-4, atol=1e-4)
        hst.reset_saes()
        hst.add_sae(loaded, use_error_term=False)
        assert (hst(tokens) - clean).abs().max() > 1e-3  # the transcoder really was spliced


def test_a_suite_refuses_an_sae_at_the_skip_transcoder_site():
    """transcoder_skip reads mlp.hook_in and writes hook_mlp_out: no SAE entry may stand there."""
    from gemma_scope_ext.training.suite_config import SuiteConfig, suite_entries

    entries = suite_entries("tiny-gemma3", sites=["transcoder_skip"], layers=[2], d_sae=64,
                            l0_coefficients=[1e-3])  # fmt: skip
    with pytest.raises(ValueError, match="site 'transcoder_skip' maps blocks.2.mlp.hook_in to"):
        SuiteConfig(model_name="tiny-gemma3", entries=entries, training_tokens=10**6)
    ok = suite_entries("tiny-gemma3", sites=["transcoder", "res"], layers=[2], d_sae=64,
                       l0_coefficients=[1e-3])  # fmt: skip
    cfg = SuiteConfig(model_name="tiny-gemma3", entries=ok, training_tokens=10**6)
    assert [e.hooks("tiny-gemma3") for e in cfg.entries] == [
        ("blocks.2.mlp.hook_in", "blocks.2.hook_mlp_out"), ("blocks.2.hook_resid_post",)]
