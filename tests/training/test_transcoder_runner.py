"""Paired activations, the transcoder evaluator and the runner, end to end on the tiny Gemma 2.

References: the tiny model's own MLP applied to the stored inputs (alignment), an unshuffled pass over
the same token stream (special-token exclusion), plain TransformerLens hooks written here (losses),
and SAELens's stock classes loading the saved artifact.
"""

from __future__ import annotations

import copy

import datasets
import pytest
import torch
from sae_lens import SAE, HookedSAETransformer, JumpReLUTranscoder, LoggingConfig
from sae_lens.saes.sae import TrainStepInput

from gemma_scope_ext.models.text import sample_texts, sample_tokens
from gemma_scope_ext.training import (
    GemmaScopeTrainingTranscoder,
    GemmaScopeTrainingTranscoderConfig,
    TranscoderActivationsStore,
    TranscoderEvaluator,
    TranscoderRunnerConfig,
    TranscoderTrainingRunner,
    gemma_scope_transcoder_config,
    split_pairs,
)

LAYER = 1
HOOK_IN, HOOK_OUT = f"blocks.{LAYER}.ln2.hook_normalized", f"blocks.{LAYER}.hook_mlp_out"
SPECIAL = torch.tensor([0, 1, 2])  # pad, eos, bos


@pytest.fixture(scope="module")
def dataset():
    return datasets.Dataset.from_dict({"text": sample_texts("train", 400)})


def make_store(model, dataset, exclude=SPECIAL, **kwargs) -> TranscoderActivationsStore:
    settings = dict(streaming=False, context_size=32, n_batches_in_buffer=4,
                    store_batch_size_prompts=4, train_batch_size_tokens=64)  # fmt: skip
    settings.update(kwargs)
    return TranscoderActivationsStore.create(
        model, dataset, HOOK_IN, HOOK_OUT, 128, 128, exclude_special_tokens=exclude, **settings
    )


def mlp_of(model, x: torch.Tensor) -> torch.Tensor:
    """The block's MLP as the model computes it from the pre-gain input: ln2_post(mlp(x * w))."""
    block = model.blocks[LAYER]
    with torch.no_grad():
        return block.ln2_post(block.mlp((x * block.ln2.w)[None]))[0]


def test_pairs_stay_aligned_through_shuffling(kind_model, tiny_model, dataset) -> None:
    torch.manual_seed(0)
    store = make_store(kind_model, dataset)
    x, y = split_pairs(torch.cat([next(store) for _ in range(3)]), 128)
    assert x.shape == y.shape == (192, 128)
    torch.testing.assert_close(y, mlp_of(tiny_model, x), rtol=1e-5, atol=1e-5)
    # The check discriminates: pairing each input with its neighbour's target fails it.
    assert (y.roll(1, 0) - mlp_of(tiny_model, x)).abs().max() > 0.1
    # And the rows really were shuffled: an unshuffled store serves them in another order.
    ordered = make_store(kind_model, dataset, activations_mixing_fraction=0.0).next_pair().x
    assert not torch.equal(x[:64], ordered)


def reference_rows(model, dataset, n_llm_batches: int):
    """Every (x, y, token) of the first LLM batches, in order, special tokens included."""
    store = make_store(model, dataset, exclude=None)
    xs, ys, ids = [], [], []
    for _ in range(n_llm_batches):
        tokens = store.get_batch_tokens()
        acts = store.get_multi_hook_activations(tokens)
        xs.append(acts[HOOK_IN].reshape(-1, 128))
        ys.append(acts[HOOK_OUT].reshape(-1, 128))
        ids.append(tokens.reshape(-1))
    return torch.cat(xs), torch.cat(ys), torch.cat(ids)


def served_tokens(model, dataset, exclude, ref) -> tuple[torch.Tensor, int]:
    """Token id behind every served row (found by exact match), and how many rows were served."""
    torch.manual_seed(1)
    store = make_store(model, dataset, exclude=exclude)
    x, y = split_pairs(torch.cat([next(store) for _ in range(3)]), 128)
    ref_x, ref_y, ref_ids = ref
    dist = torch.cdist(x, ref_x, compute_mode="donot_use_mm_for_euclid_dist")
    nearest = dist.argmin(-1)
    assert dist.min(-1).values.max() < 1e-5, "a served input matches no token of the stream"
    torch.testing.assert_close(y, ref_y[nearest], rtol=0, atol=1e-6)  # its own target
    return ref_ids[nearest], len(x)


def test_special_tokens_are_excluded_from_input_and_target(tiny_model, dataset) -> None:
    ref = reference_rows(tiny_model, dataset, n_llm_batches=8)
    assert torch.isin(ref[2], SPECIAL).sum() >= 8  # the stream does hold BOS/EOS rows
    ids, n = served_tokens(tiny_model, dataset, SPECIAL, ref)
    assert n == 192 and not torch.isin(ids, SPECIAL).any()
    # Control: without exclusion the same stream serves special-token rows.
    ids, _ = served_tokens(tiny_model, dataset, None, ref)
    assert torch.isin(ids, SPECIAL).any()


def reference_losses(model, transcoder, tokens: torch.Tensor) -> dict[str, float]:
    """Clean, spliced, zero- and mean-ablated CE with plain hooks; special tokens keep their values
    and a prediction counts when the token it is made at is not special."""
    keep = ~torch.isin(tokens, SPECIAL)
    counted = keep[:, :-1].float()

    def ce(logits: torch.Tensor) -> float:
        nll = -logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
        return float((nll * counted).sum() / counted.sum())

    captured = {}

    def grab(act, hook):
        captured["x"] = act

    def put(value):
        return lambda act, hook: torch.where(keep[..., None], value(act), act)

    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[HOOK_OUT])
        mean = cache[HOOK_OUT][keep].double().mean(0).float()
        run = lambda fn: ce(model.run_with_hooks(tokens, fwd_hooks=[(HOOK_IN, grab), (HOOK_OUT, put(fn))]))  # noqa: E731
        return {
            "clean": ce(model(tokens)),
            "spliced": run(lambda act: transcoder(captured["x"])),
            "zero": run(torch.zeros_like),
            "mean": run(lambda act: mean.expand_as(act)),
        }


def test_evaluator_losses_equal_a_plain_hooks_reference(kind_model, dataset) -> None:
    torch.manual_seed(3)
    tc = GemmaScopeTrainingTranscoder(GemmaScopeTrainingTranscoderConfig(d_in=128, d_sae=64))
    x, y = make_store(kind_model, dataset).next_pair()
    tc.estimate_scales(x, y)  # outputs of the MLP's size, so the splice moves the loss modestly
    tc.eval()
    evaluator = TranscoderEvaluator(kind_model, make_store(kind_model, dataset), 2, 4)
    metrics = evaluator(tc)
    # An identical store replays the same token stream for the reference.
    tokens = TranscoderEvaluator(kind_model, make_store(kind_model, dataset), 2, 4).eval_tokens()
    assert tokens.shape == (8, 32)
    ref = reference_losses(kind_model, tc, tokens)
    key = "model_performance_preservation/"
    assert metrics[key + "ce_loss_without_sae"] == pytest.approx(ref["clean"], abs=1e-4)
    assert metrics[key + "ce_loss_with_sae"] == pytest.approx(ref["spliced"], abs=1e-4)
    assert metrics[key + "delta_ce_loss"] == pytest.approx(ref["spliced"] - ref["clean"], abs=1e-4)
    assert metrics[key + "ce_loss_with_ablation"] == pytest.approx(ref["zero"], abs=1e-4)
    assert metrics[key + "ce_loss_with_mean_ablation"] == pytest.approx(ref["mean"], abs=1e-4)
    assert abs(ref["spliced"] - ref["clean"]) > 1e-3  # the splice did change the loss
    # FVU against the target at the output hook, not the input.
    keep = ~torch.isin(tokens, SPECIAL)
    _, cache = kind_model.run_with_cache(tokens, names_filter=[HOOK_IN, HOOK_OUT])
    xi, yo = cache[HOOK_IN][keep], cache[HOOK_OUT][keep]
    with torch.no_grad():
        fvu = (yo - tc(xi)).pow(2).sum() / (yo - yo.mean(0)).pow(2).sum()
    assert metrics["reconstruction_quality/fvu"] == pytest.approx(float(fvu), rel=1e-4)


def test_config_names_both_hooks_and_rejects_cached_activations() -> None:
    cfg = gemma_scope_transcoder_config("tiny-gemma2", 2, 256, context_size=32)
    assert (cfg.hook_name, cfg.hook_name_out) == ("blocks.2.ln2.hook_normalized",
                                                  "blocks.2.hook_mlp_out")  # fmt: skip
    assert isinstance(cfg.sae, GemmaScopeTrainingTranscoderConfig)
    assert (cfg.sae.d_in, cfg.sae.d_out, cfg.sae.d_sae) == (128, 128, 256)
    assert cfg.sae.metadata.hook_name_out == "blocks.2.hook_mlp_out"
    assert (cfg.lr, cfg.adam_beta1, cfg.exclude_special_tokens) == (7e-5, 0.0, True)
    # The runner saves cfg.to_dict(); it must read back as the same transcoder config.
    again = TranscoderRunnerConfig.from_dict(cfg.to_dict())
    assert again.hook_name_out == cfg.hook_name_out and again.sae == cfg.sae
    with pytest.raises(ValueError, match="use_cached_activations"):
        TranscoderRunnerConfig(sae=cfg.sae, hook_name=HOOK_IN, hook_name_out=HOOK_OUT,
                               use_cached_activations=True, verbose=False)  # fmt: skip


def objective(tc, x, y, lam) -> float:
    step = TrainStepInput(torch.cat([x, y], -1), {"l0": lam}, None, 0, False)
    with torch.no_grad():
        return float(tc.training_forward_pass(step).loss)


def test_runner_trains_a_transcoder_end_to_end(tiny_model, dataset, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")  # logging on (so evals run), nothing sent
    torch.manual_seed(4)
    lam = 2e-3
    logger = LoggingConfig(log_to_wandb=True, wandb_log_frequency=10, eval_every_n_wandb_logs=10)
    cfg = gemma_scope_transcoder_config(
        "tiny-gemma2", LAYER, 256, context_size=32, training_tokens=300 * 128,
        train_batch_size_tokens=128, store_batch_size_prompts=32, n_batches_in_buffer=16,
        l0_coefficient=lam, l0_warm_up_steps=50, lr=2e-3, lr_warm_up_steps=10,
        output_path=str(tmp_path), n_eval_batches=1, eval_batch_size_prompts=4, logger=logger,
    )  # fmt: skip
    assert cfg.logger is logger and logger.run_name.startswith("gemma_scope_jumprelu_transcoder")
    runner = TranscoderTrainingRunner(cfg, override_model=tiny_model, override_dataset=dataset)
    initial = copy.deepcopy(runner.sae)
    logged = []  # what SAETrainer receives from the runner's evaluator every 100 steps
    evaluator = runner.evaluator
    runner.evaluator = lambda *args: logged.append(evaluator(*args)) or logged[-1]
    trained = runner.run()
    assert len(logged) == 3 and all(m["sparsity/eval_l0"] > 0 for m in logged)
    assert {"model_performance_preservation/delta_ce_loss", "reconstruction_quality/fvu",
            "model_performance_preservation/ce_loss_with_mean_ablation"} <= set(logged[-1])

    # The training objective on held-out pairs falls (same scalars, final lambda).
    held_out = make_store(tiny_model, datasets.Dataset.from_dict(
        {"text": sample_texts("eval", 100)}), train_batch_size_tokens=256, n_batches_in_buffer=16).next_pair()  # fmt: skip
    initial.input_scale.copy_(trained.input_scale)
    initial.target_scale.copy_(trained.target_scale)
    initial.scales_fixed.fill_(True)
    before, after = objective(initial, *held_out, lam), objective(trained, *held_out, lam)
    assert after < 0.5 * before

    # Spliced in, it costs far less than removing the MLP.
    tokens = sample_tokens(tiny_model.tokenizer, 16, 32, "eval")
    result = evaluator.evaluate(trained, tokens)
    zero_delta = result.zero_ablation_loss - result.clean_loss
    assert result.delta_loss < 0.5 * zero_delta
    assert 0 < result.l0 < 256 and result.fvu < 1.0

    # The artifact is a stock SAELens transcoder with identical outputs.
    loaded = SAE.load_from_disk(tmp_path)
    assert type(loaded) is JumpReLUTranscoder
    assert (loaded.cfg.metadata.hook_name, loaded.cfg.metadata.hook_name_out) == (HOOK_IN, HOOK_OUT)
    x = held_out.x
    torch.testing.assert_close(loaded(x), trained(x).detach(), rtol=1e-5, atol=1e-5)

    # Spliced with HookedSAETransformer: the error term restores the clean logits exactly.
    hst = HookedSAETransformer(tiny_model.cfg, tokenizer=tiny_model.tokenizer)
    hst.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():
        clean = tiny_model(tokens)
        hst.add_sae(loaded, use_error_term=True)
        torch.testing.assert_close(hst(tokens), clean, rtol=1e-4, atol=1e-4)
        hst.reset_saes()
        hst.add_sae(loaded, use_error_term=False)
        assert (hst(tokens) - clean).abs().max() > 1e-3  # the transcoder really was spliced


def test_runner_handles_different_input_and_output_widths(tiny_model, dataset, tmp_path) -> None:
    """Head outputs before W_O (d_attn 96) -> attention output (d_model 128): d_in != d_out."""
    torch.manual_seed(5)
    hook_in, hook_out = "blocks.0.attn.hook_z", "blocks.0.hook_attn_out"
    sae = GemmaScopeTrainingTranscoderConfig(d_in=96, d_sae=64, d_out=128, l0_coefficient=1e-3)
    cfg = TranscoderRunnerConfig(
        sae=sae, model_name="tiny-gemma2", hook_name=hook_in, hook_name_out=hook_out,
        is_dataset_tokenized=False, streaming=False, context_size=32, training_tokens=20 * 64,
        train_batch_size_tokens=64, store_batch_size_prompts=8, n_batches_in_buffer=4,
        exclude_special_tokens=True, lr=1e-3, output_path=str(tmp_path), checkpoint_path=None,
        logger=LoggingConfig(log_to_wandb=False), verbose=False, model_from_pretrained_kwargs={},
    )  # fmt: skip
    runner = TranscoderTrainingRunner(cfg, override_model=tiny_model, override_dataset=dataset)
    pair = runner.activations_store.next_pair()
    assert pair.x.shape == (64, 96) and pair.y.shape == (64, 128)
    trained = runner.run()
    loaded = SAE.load_from_disk(tmp_path)
    assert (loaded.cfg.d_in, loaded.cfg.d_out) == (96, 128)
    assert loaded.cfg.metadata.hook_name_out == hook_out
    torch.testing.assert_close(loaded(pair.x), trained(pair.x).detach(), rtol=1e-5, atol=1e-5)
    # The head outputs really are flattened hook_z rows: W_O maps them to the pre-norm output.
    attn = tiny_model.blocks[0].attn
    w_o = attn.W_O.reshape(96, 128)
    with torch.no_grad():
        attn_out = tiny_model.blocks[0].ln1_post((pair.x @ w_o + attn.b_O)[None])[0]
    torch.testing.assert_close(attn_out, pair.y, rtol=1e-4, atol=1e-4)
