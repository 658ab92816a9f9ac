"""The Gemma Scope transcoder classes against hand-computed values, SAELens's stock classes on the
same weights, and the recipe's defining identities (separate scalars, folding, decoder projection)."""

from __future__ import annotations

import json

import pytest
import torch
from sae_lens import SAE, JumpReLUTranscoder, JumpReLUTranscoderConfig
from sae_lens.saes.sae import TrainStepInput

from gemma_scope_ext.saes import GemmaScopeTranscoder, GemmaScopeTranscoderConfig
from gemma_scope_ext.training import (
    GemmaScopeTrainingTranscoder,
    GemmaScopeTrainingTranscoderConfig,
)

D_IN, D_SAE, D_OUT = 6, 10, 4


def hand_params() -> dict[str, torch.Tensor]:
    """A 2 -> 3 -> 2 transcoder small enough to compute by hand."""
    return {
        "W_enc": torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]),
        "b_enc": torch.tensor([0.0, -0.5, 0.0]),
        "threshold": torch.tensor([0.5, 0.2, 1.0]),
        "W_dec": torch.tensor([[1.0, 1.0], [0.0, 2.0], [3.0, 0.0]]),
        "b_dec": torch.tensor([0.1, -0.1]),
    }


def test_inference_transcoder_matches_hand_computation() -> None:
    tc = GemmaScopeTranscoder.from_params(
        hand_params(), hook_name="blocks.0.ln2.hook_normalized", hook_name_out="blocks.0.hook_mlp_out"
    )
    x = torch.tensor([[1.0, 1.0], [0.4, 2.0]])
    # Row 1: z = [1, 0.5, 1]; gates (z > theta) = [1, 1, 0] -> f = [1, 0.5, 0]
    #        y = [1, 1] + 0.5 * [0, 2] + b_dec = [1.1, 1.9]
    # Row 2: z = [0.4, 1.5, -1.2]; gates = [0, 1, 0] -> f = [0, 1.5, 0]; y = [0.1, 2.9]
    # b_dec is never subtracted from the input (it lives in the output space).
    f = tc.encode(x)
    torch.testing.assert_close(f, torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.5, 0.0]]))
    torch.testing.assert_close(tc(x), torch.tensor([[1.1, 1.9], [0.1, 2.9]]))
    assert tc.cfg.metadata.hook_name_out == "blocks.0.hook_mlp_out"
    assert tc.cfg.architecture() == "gemma_scope_jumprelu_transcoder"


def test_inference_transcoder_equals_stock_sae_lens_on_same_weights() -> None:
    torch.manual_seed(0)
    params = {
        "W_enc": torch.randn(D_IN, D_SAE), "b_enc": torch.randn(D_SAE) * 0.1,
        "threshold": torch.rand(D_SAE) * 0.5, "W_dec": torch.randn(D_SAE, D_OUT),
        "b_dec": torch.randn(D_OUT),
    }  # fmt: skip
    ours = GemmaScopeTranscoder.from_params(params)
    stock = JumpReLUTranscoder(JumpReLUTranscoderConfig(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT,
                                                        apply_b_dec_to_input=False))  # fmt: skip
    stock.load_state_dict(params)
    x = torch.randn(32, D_IN)
    assert ours(x).shape == (32, D_OUT)
    torch.testing.assert_close(ours(x), stock(x), rtol=0, atol=0)


def test_from_params_rejects_inconsistent_shapes() -> None:
    params = hand_params()
    params["b_dec"] = torch.zeros(3)
    with pytest.raises(ValueError, match="b_dec has shape"):
        GemmaScopeTranscoder.from_params(params)


def test_configs_refuse_input_centring() -> None:
    with pytest.raises(ValueError, match="apply_b_dec_to_input"):
        GemmaScopeTranscoderConfig(d_in=4, d_sae=8, d_out=4, apply_b_dec_to_input=True)
    with pytest.raises(ValueError, match="apply_b_dec_to_input"):
        GemmaScopeTrainingTranscoderConfig(d_in=4, d_sae=8, apply_b_dec_to_input=True)
    assert GemmaScopeTrainingTranscoderConfig(d_in=4, d_sae=8).d_out == 4


def make_training(d_out: int = D_OUT, **kwargs) -> GemmaScopeTrainingTranscoder:
    torch.manual_seed(1)
    cfg = GemmaScopeTrainingTranscoderConfig(d_in=D_IN, d_sae=D_SAE, d_out=d_out, **kwargs)
    return GemmaScopeTrainingTranscoder(cfg)


def pairs(n: int = 64, x_scale: float = 3.0, y_scale: float = 0.2) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(2)
    return torch.randn(n, D_IN) * x_scale, torch.randn(n, D_OUT) * y_scale


def step_input(x: torch.Tensor, y: torch.Tensor, lam: float) -> TrainStepInput:
    return TrainStepInput(sae_in=torch.cat([x, y], dim=-1), coefficients={"l0": lam},
                          dead_neuron_mask=None, n_training_steps=0, is_logging_step=False)  # fmt: skip


def test_initial_weights_follow_the_recipe_at_any_output_width() -> None:
    square = make_training(d_out=D_IN)
    torch.testing.assert_close(square.W_dec.norm(dim=-1), torch.ones(D_SAE))
    torch.testing.assert_close(square.W_enc, square.W_dec.T)  # Gemma Scope: W_enc = W_dec^T
    narrow = make_training()
    assert narrow.W_dec.shape == (D_SAE, D_OUT) and narrow.b_dec.shape == (D_OUT,)
    torch.testing.assert_close(narrow.W_dec.norm(dim=-1), torch.ones(D_SAE))
    assert float(narrow.b_dec.detach().abs().sum()) == float(narrow.b_enc.detach().abs().sum()) == 0


def test_training_loss_is_scaled_mse_plus_l0_with_separate_scalars() -> None:
    tc = make_training()
    x, y = pairs()
    lam = 0.01
    out = tc.training_forward_pass(step_input(x, y, lam))
    # Each side gets its own scalar so that E||s x||^2 = 1 and E||s y||^2 = 1.
    s_in = x.pow(2).sum(-1).mean().rsqrt()
    s_out = y.pow(2).sum(-1).mean().rsqrt()
    torch.testing.assert_close(tc.input_scale, s_in)
    torch.testing.assert_close(tc.target_scale, s_out)
    # Reference forward written out from the parameters.
    theta = tc.get_threshold().detach()
    z = (x * s_in) @ tc.W_enc.detach() + tc.b_enc.detach()
    f = z * (z > theta)
    y_hat = f @ tc.W_dec.detach() + tc.b_dec.detach()
    mse = (y * s_out - y_hat).pow(2).sum(-1).mean()
    l0 = (z > theta).float().sum(-1).mean()
    torch.testing.assert_close(out.losses["mse_loss"], mse)
    torch.testing.assert_close(out.losses["l0_loss"], lam * l0)
    torch.testing.assert_close(out.loss, mse + lam * l0)
    # The trainer logs explained variance from sae_in vs sae_out: it must be the scaled target.
    torch.testing.assert_close(out.sae_in, y * s_out)


def test_decoder_gradient_has_no_component_along_rows() -> None:
    tc = make_training()
    x, y = pairs()
    out = tc.training_forward_pass(step_input(x, y, 0.01))
    out.loss.backward()
    radial = (tc.W_dec.grad * tc.W_dec).sum(-1)
    assert tc.W_dec.grad.abs().max() > 1e-3  # a real gradient, not zero
    torch.testing.assert_close(radial, torch.zeros(D_SAE), atol=1e-6, rtol=0)


@pytest.mark.parametrize("parametrisation", ["log", "raw"])
def test_raw_space_forward_and_saved_artifact_agree_with_stock_sae_lens(
    tmp_path, parametrisation
) -> None:
    tc = make_training(threshold_parametrisation=parametrisation)
    x, y = pairs()
    tc.training_forward_pass(step_input(x, y, 0.01))  # fixes the scalars
    with torch.no_grad():
        tc.W_dec.mul_(1.3)  # rows off the unit sphere, as after an optimiser step
        tc.b_dec.normal_()
        tc.b_enc.normal_(std=0.1)
        if parametrisation == "raw":  # an optimiser step may leave raw thresholds below 0
            tc.threshold[:5] = -0.5
    tc.eval()
    tc.cfg.metadata.hook_name = "blocks.2.ln2.hook_normalized"
    tc.cfg.metadata.hook_name_out = "blocks.2.hook_mlp_out"
    tc.save_inference_model(tmp_path)  # renormalises rows first, as the final step would
    expected = tc.decode(tc.encode(x)).detach()
    # Reference: scaled-space computation mapped back by hand.
    z = (x * tc.input_scale) @ tc.W_enc + tc.b_enc
    f = z * (z > tc.get_threshold())
    torch.testing.assert_close(expected, ((f @ tc.W_dec + tc.b_dec) / tc.target_scale).detach())

    assert json.loads((tmp_path / "cfg.json").read_text())["architecture"] == "jumprelu_transcoder"
    loaded = SAE.load_from_disk(tmp_path)
    assert type(loaded) is JumpReLUTranscoder  # SAELens's own class
    assert loaded.cfg.metadata.hook_name_out == "blocks.2.hook_mlp_out"
    assert loaded.cfg.d_out == D_OUT
    torch.testing.assert_close(loaded(x), expected, rtol=1e-5, atol=1e-5)
    assert expected.abs().max() > 0.1  # not a vacuous comparison of zeros


def test_training_batch_of_the_wrong_width_is_refused() -> None:
    tc = make_training()
    with pytest.raises(ValueError, match="packed"):
        tc.training_forward_pass(TrainStepInput(torch.randn(8, D_IN), {"l0": 0.0}, None, 0, False))
