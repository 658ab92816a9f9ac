"""The L0 penalties: hand-computed values, and SAELens's quadratic (Gemma Scope 2) penalty on the same
weights, loss and gradients."""

from __future__ import annotations

import pytest
import torch
from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput

from gemma_scope_ext.training.config import GemmaScopeTrainingSAEConfig
from gemma_scope_ext.training.sae import GemmaScopeTrainingSAE
from gemma_scope_ext.training.sparsity import sparsity_penalty


def test_hand_computed_penalties():
    l0 = torch.tensor([10.0, 30.0, 20.0])
    assert sparsity_penalty(l0).item() == pytest.approx(20.0)
    # (2 / 20) * ((10 - 20)^2 + (30 - 20)^2 + 0) / 3 = 0.1 * 200 / 3
    assert sparsity_penalty(l0, "quadratic", 20.0).item() == pytest.approx(20 / 3)
    # At the target it vanishes; at twice the target it equals the step penalty.
    assert sparsity_penalty(torch.tensor([20.0]), "quadratic", 20.0).item() == 0.0
    assert sparsity_penalty(torch.tensor([40.0]), "quadratic", 20.0).item() == pytest.approx(40.0)
    with pytest.raises(ValueError, match="needs a target_l0 > 0"):
        sparsity_penalty(l0, "quadratic", None)
    with pytest.raises(ValueError, match="unknown l0_penalty 'tanh'"):
        sparsity_penalty(l0, "tanh")  # type: ignore[arg-type]


def test_quadratic_penalty_equals_sae_lens_on_the_same_weights():
    torch.manual_seed(0)
    d_in, d_sae, eps, target = 6, 40, 0.05, 8.0
    ours = GemmaScopeTrainingSAE(GemmaScopeTrainingSAEConfig(
        d_in=d_in, d_sae=d_sae, l0_penalty="quadratic", target_l0=target, jumprelu_bandwidth=eps,
        jumprelu_init_threshold=0.1, input_scaling="none", sparse_training="off"))  # fmt: skip
    stock = JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(
        d_in=d_in, d_sae=d_sae, jumprelu_sparsity_loss_mode="quadratic", target_l0=target,
        jumprelu_bandwidth=eps, jumprelu_init_threshold=0.1, apply_b_dec_to_input=False))  # fmt: skip
    with torch.no_grad():
        ours.b_enc.normal_(0, 0.3)
        ours.threshold.uniform_(0.05, 0.6)
    stock.load_state_dict({k: v.detach().clone() for k, v in ours.state_dict().items()
                           if k in dict(stock.named_parameters())})  # fmt: skip
    x = torch.randn(64, d_in)
    losses = {}
    for name, sae in (("ours", ours), ("stock", stock)):
        step = TrainStepInput(x, {"l0": 0.3}, None, 0, False)
        feats, pre = sae.encode_with_hidden_pre(x)
        loss = sae.calculate_aux_loss(step, feats, pre, sae.decode(feats))["l0_loss"]
        loss.backward()
        losses[name] = (loss.item(), sae.threshold.grad.clone())
    l0 = (x @ ours.W_enc + ours.b_enc > ours.threshold).float().sum(-1)
    assert (l0 != target).any() and (l0 > 0).all()  # neither at the target nor empty
    expected = 0.3 * (2 / target * (l0 - target) ** 2).mean()
    assert losses["ours"][0] == pytest.approx(expected.item(), rel=1e-6)
    assert losses["ours"][0] == pytest.approx(losses["stock"][0], rel=1e-6)
    assert losses["ours"][1].abs().sum() > 0  # some pre-activations sit in the kernel's band
    torch.testing.assert_close(losses["ours"][1], losses["stock"][1])


def test_the_step_penalty_is_the_default_and_differs():
    torch.manual_seed(1)
    cfg = dict(d_in=4, d_sae=16, input_scaling="none", jumprelu_init_threshold=0.01)
    step_sae = GemmaScopeTrainingSAE(GemmaScopeTrainingSAEConfig(**cfg))
    quad = GemmaScopeTrainingSAE(GemmaScopeTrainingSAEConfig(**cfg, l0_penalty="quadratic",
                                                             target_l0=2.0))  # fmt: skip
    quad.load_state_dict(step_sae.state_dict())
    x = torch.randn(32, 4)
    out = [s.training_forward_pass(TrainStepInput(x, {"l0": 1.0}, None, 0, False)).losses["l0_loss"]
           for s in (step_sae, quad)]  # fmt: skip
    l0 = (x @ step_sae.W_enc + step_sae.b_enc > step_sae.threshold).float().sum(-1)
    assert out[0].item() == pytest.approx(l0.mean().item())
    assert out[1].item() == pytest.approx((2 / 2.0 * (l0 - 2.0) ** 2).mean().item())
    assert out[0].item() != pytest.approx(out[1].item())


@pytest.mark.parametrize("kwargs, match", [
    (dict(l0_penalty="quadratic"), "needs 0 < target_l0 <= d_sae"),
    (dict(l0_penalty="quadratic", target_l0=0), "needs 0 < target_l0"),
    (dict(l0_penalty="quadratic", target_l0=17), r"d_sae \(16\), got 17"),
    (dict(target_l0=10), "read only by l0_penalty='quadratic'"),
    (dict(l0_penalty="quadratic", target_l0=4, sparse_training="on"), "computes only the step"),
    (dict(l0_penalty="square"), "l0_penalty must be one of step, quadratic"),
])  # fmt: skip
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GemmaScopeTrainingSAEConfig(d_in=4, d_sae=16, **kwargs)
