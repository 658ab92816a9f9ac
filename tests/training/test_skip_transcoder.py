"""Training the skip transcoder with the recipe: its loss against a plain-torch computation, ground
truth on synthetic data, and the saved stock ``jumprelu_skip_transcoder`` against the trained module."""

from __future__ import annotations

import json

import pytest
import torch
from sae_lens import SAE
from sae_lens.saes.sae import TrainStepInput
from sae_lens.saes.transcoder import JumpReLUSkipTranscoder

import gemma_scope_ext  # noqa: F401  (registers the architecture)
from gemma_scope_ext.training.skip_transcoder import (
    GemmaScopeTrainingSkipTranscoder,
    GemmaScopeTrainingSkipTranscoderConfig,
)
from gemma_scope_ext.training.transcoder import (
    GemmaScopeTrainingTranscoder,
    GemmaScopeTrainingTranscoderConfig,
)

D_IN, D_SAE, D_OUT = 8, 32, 5


def _make(cls=GemmaScopeTrainingSkipTranscoder, cfg_cls=GemmaScopeTrainingSkipTranscoderConfig,
          seed=0, d_sae=D_SAE, **cfg):  # fmt: skip
    torch.manual_seed(seed)
    return cls(cfg_cls(d_in=D_IN, d_sae=d_sae, d_out=D_OUT, jumprelu_init_threshold=0.05,
                       l0_warm_up_steps=0, **cfg))  # fmt: skip


def _step(tc, x, y, l0=1e-3, step=0):
    return tc.training_forward_pass(TrainStepInput(torch.cat([x, y], -1), {"l0": l0}, None, step, False))


def _data(n, seed):
    """y = x A (a linear map no sparse code of 32 latents reproduces) plus a sparse part."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(D_IN, D_OUT, generator=torch.Generator().manual_seed(99))
    x = torch.randn(n, D_IN, generator=g) * 2
    return x, x @ a + torch.relu(x[:, :1] - 1) * 3


def test_loss_is_the_plain_skip_loss_on_scaled_activations():
    tc = _make()
    with torch.no_grad():
        tc.W_skip.normal_()
    x, y = _data(64, 1)
    out = _step(tc, x, y, l0=0.0)
    s_in, s_out = tc.input_scale.item(), tc.target_scale.item()
    assert s_in != pytest.approx(s_out)  # separate scalars: the fold below is not trivial
    p = {k: v.detach().double() for k, v in tc.named_parameters()}
    xs, ys = x.double() * s_in, y.double() * s_out
    z = xs @ p["W_enc"] + p["b_enc"]
    f = z * (z > p["threshold"])
    y_hat = f @ p["W_dec"] + p["b_dec"] + xs @ p["W_skip"].T
    expected = (y_hat - ys).pow(2).sum(-1).mean()
    assert out.losses["mse_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    # The raw forward is the scaled one divided by s_out.
    torch.testing.assert_close(tc(x).double(), y_hat / s_out, rtol=1e-5, atol=1e-5)


def _train(tc, steps=300, lr=3e-2):
    opt = torch.optim.Adam(tc.parameters(), lr=lr, betas=(0.0, 0.999))
    for i in range(steps):
        x, y = _data(128, 1000 + i)
        loss = _step(tc, x, y, l0=1e-4, step=i).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tc.parameters(), 1.0)
        opt.step()
        opt.zero_grad()


def test_the_skip_path_learns_the_linear_part(one_thread):
    # Four latents: enough for the sparse part, far too few for a rank-5 linear map.
    skip = _make(d_sae=4)
    plain = _make(GemmaScopeTrainingTranscoder, GemmaScopeTrainingTranscoderConfig, d_sae=4)
    _train(skip)
    _train(plain)
    x, y = _data(512, 7)
    with torch.no_grad():
        fvu = {name: ((m(x) - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum()).item()
               for name, m in (("skip", skip), ("plain", plain))}  # fmt: skip
    # Ground truth: the linear part is x A. The skip path recovers it; without one, the four
    # latents cannot (negative control).
    assert fvu["skip"] < 0.05 < fvu["plain"], fvu
    a = torch.randn(D_IN, D_OUT, generator=torch.Generator().manual_seed(99))
    w = skip.inference_state_dict()["W_skip"]
    assert (w.T - a).norm() / a.norm() < 0.2


def test_saved_model_is_stock_jumprelu_skip_transcoder_with_identical_outputs(tmp_path):
    tc = _make()
    _train(tc, steps=20)
    tc.save_inference_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu_skip_transcoder" and cfg["d_out"] == D_OUT
    stock = SAE.load_from_disk(tmp_path)
    assert type(stock) is JumpReLUSkipTranscoder
    x, _ = _data(40, 3)
    with torch.no_grad():
        torch.testing.assert_close(stock(x), tc(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(stock.encode(x), tc.encode(x), rtol=1e-5, atol=1e-5)
        out = tc(x)
        tc.fold_scales()  # folding in place changes no output
        torch.testing.assert_close(tc(x), out, rtol=1e-5, atol=1e-5)


def test_the_dense_step_always_runs():
    with pytest.raises(ValueError, match="sparse_training='on' is impossible for a skip"):
        GemmaScopeTrainingSkipTranscoderConfig(d_in=4, d_sae=8, sparse_training="on")
    tc = _make(sparse_training="auto")
    x, y = _data(16, 0)
    assert not tc._sparse_step_applies(x, y)


def test_sae_lens_runner_trains_a_skip_transcoder_on_the_tiny_model(one_thread, tiny_model,
                                                                   tmp_path):  # fmt: skip
    import datasets
    from sae_lens import HookedSAETransformer

    from gemma_scope_ext.models.text import sample_texts, sample_tokens
    from gemma_scope_ext.training import TranscoderTrainingRunner, gemma_scope_transcoder_config

    torch.manual_seed(4)
    cfg = gemma_scope_transcoder_config(
        "tiny-gemma2", 1, 128, skip=True, context_size=32, training_tokens=150 * 128,
        train_batch_size_tokens=128, store_batch_size_prompts=32, n_batches_in_buffer=16,
        l0_coefficient=2e-3, l0_warm_up_steps=50, lr=2e-3, lr_warm_up_steps=10,
        output_path=str(tmp_path),
    )  # fmt: skip
    assert type(cfg.sae) is GemmaScopeTrainingSkipTranscoderConfig
    dataset = datasets.Dataset.from_dict({"text": sample_texts("train", 400)})
    runner = TranscoderTrainingRunner(cfg, override_model=tiny_model, override_dataset=dataset)
    assert type(runner.sae) is GemmaScopeTrainingSkipTranscoder
    pair = runner.activations_store.next_pair()
    trained = runner.run()
    assert trained.W_skip.abs().max() > 1e-3  # the skip path was trained (it starts at zero)
    loaded = SAE.load_from_disk(tmp_path)
    assert type(loaded) is JumpReLUSkipTranscoder
    with torch.no_grad():
        torch.testing.assert_close(loaded(pair.x), trained(pair.x), rtol=1e-5, atol=1e-5)
        fvu = ((trained(pair.x) - pair.y).pow(2).sum() / (pair.y - pair.y.mean(0)).pow(2).sum())
        assert fvu < 0.5
        # Spliced with SAELens's HookedSAETransformer, the error term restores the clean logits.
        hst = HookedSAETransformer(tiny_model.cfg, tokenizer=tiny_model.tokenizer)
        hst.load_state_dict(tiny_model.state_dict())
        tokens = sample_tokens(tiny_model.tokenizer, 4, 32, "eval")
        clean = tiny_model(tokens)
        hst.add_sae(loaded, use_error_term=True)
        torch.testing.assert_close(hst(tokens), clean, rtol=1e-4, atol=1e-4)
        hst.reset_saes()
        hst.add_sae(loaded, use_error_term=False)
        assert (hst(tokens) - clean).abs().max() > 1e-3
