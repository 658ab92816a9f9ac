"""JumpReLU and step: hand-computed values and the straight-through estimators' analytic gradients."""

from __future__ import annotations

import pytest
import torch
from sae_lens.saes.jumprelu_sae import JumpReLU as SaeLensJumpReLU
from sae_lens.saes.jumprelu_sae import Step as SaeLensStep

from gemma_scope_ext.saes.jumprelu import jumprelu, rectangle, step


def test_rectangle_is_the_open_unit_box():
    x = torch.tensor([-0.75, -0.5, -0.49, 0.0, 0.49, 0.5, 0.75])
    assert rectangle(x).tolist() == [0, 0, 1, 1, 1, 0, 0]


def test_forward_values_by_hand():
    theta = torch.tensor([0.001])
    z = torch.tensor([[-1.0], [0.0005], [0.001], [0.0015], [2.0]])
    # strict inequality: a pre-activation equal to the threshold is gated off
    assert jumprelu(z, theta, 0.001).flatten().tolist() == pytest.approx([0, 0, 0, 0.0015, 2.0])
    assert step(z, theta, 0.001).flatten().tolist() == [0, 0, 0, 1, 1]


def test_gradients_by_hand():
    # theta = 1, eps = 0.5: z within (0.75, 1.25) is inside the kernel
    theta = torch.tensor([1.0], requires_grad=True)
    z = torch.tensor([[0.8], [1.2], [1.3], [0.5]], requires_grad=True)
    jumprelu(z, theta, 0.5).sum().backward()
    # d/dtheta = sum over inside points of -(theta / eps) = 2 * -2
    assert theta.grad.item() == pytest.approx(-4.0)
    # d/dz = H(z - theta): only 1.2 and 1.3 are above
    assert z.grad.flatten().tolist() == [0.0, 1.0, 1.0, 0.0]

    theta.grad = None
    z2 = z.detach().clone().requires_grad_(True)
    step(z2, theta, 0.5).sum().backward()
    assert theta.grad.item() == pytest.approx(2 * -(1 / 0.5))
    assert z2.grad is None  # no pseudo-gradient to z from the step


def _analytic(z, theta, eps, g):
    """Reference gradients written out from the estimator's definition, elementwise."""
    u = (z - theta) / eps
    inside = (u.abs() < 0.5).to(z.dtype)
    d_jump_theta = (-(theta / eps) * inside * g).sum(0)
    d_jump_z = (z > theta).to(z.dtype) * g
    d_step_theta = (-(1 / eps) * inside * g).sum(0)
    return d_jump_theta, d_jump_z, d_step_theta


@pytest.mark.parametrize("eps", [0.001, 0.05])
def test_gradients_equal_analytic_formulas(eps):
    gen = torch.Generator().manual_seed(0)
    theta = torch.rand(16, generator=gen, dtype=torch.float64) * 0.1 + 0.01
    # Pre-activations concentrated around the thresholds so that the kernel sees many of them.
    z = theta + (torch.rand(64, 16, generator=gen, dtype=torch.float64) - 0.5) * 4 * eps
    g = torch.randn(64, 16, generator=gen, dtype=torch.float64)
    ref_jt, ref_jz, ref_st = _analytic(z, theta, eps, g)
    assert ref_jt.abs().sum() > 0 and ref_st.abs().sum() > 0  # the kernel window is populated

    th = theta.clone().requires_grad_(True)
    zz = z.clone().requires_grad_(True)
    (jumprelu(zz, th, eps) * g).sum().backward()
    torch.testing.assert_close(th.grad, ref_jt)
    torch.testing.assert_close(zz.grad, ref_jz)

    th.grad = None
    (step(z, th, eps) * g).sum().backward()
    torch.testing.assert_close(th.grad, ref_st)


def test_matches_sae_lens_estimators_without_ste_to_input():
    gen = torch.Generator().manual_seed(1)
    theta = torch.rand(8, generator=gen) * 0.05
    z = theta + (torch.rand(32, 8, generator=gen) - 0.5) * 0.2
    g = torch.randn(32, 8, generator=gen)
    for ours, theirs in [(jumprelu, SaeLensJumpReLU), (step, SaeLensStep)]:
        a_t, b_t = theta.clone().requires_grad_(True), theta.clone().requires_grad_(True)
        a_z, b_z = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        out_a = ours(a_z, a_t, 0.1)
        out_b = theirs.apply(b_z, b_t, 0.1, False)
        torch.testing.assert_close(out_a, out_b)
        (out_a * g).sum().backward()
        (out_b * g).sum().backward()
        torch.testing.assert_close(a_t.grad, b_t.grad)
        if b_z.grad is None:
            assert a_z.grad is None
        else:
            torch.testing.assert_close(a_z.grad, b_z.grad)


def test_threshold_gradient_sums_over_all_leading_dims():
    theta = torch.tensor([0.5, 1.0], requires_grad=True)
    z = torch.tensor([[[0.5, 1.0]], [[0.5, 0.0]]])  # [batch=2, pos=1, d_sae=2], all at threshold
    jumprelu(z, theta, 0.1).sum().backward()
    # latent 0: both points inside -> 2 * -(0.5/0.1); latent 1: one point inside -> -(1/0.1)
    assert theta.grad.tolist() == pytest.approx([-10.0, -10.0])


def test_bandwidth_must_be_a_positive_float():
    z, theta = torch.zeros(2, 3), torch.zeros(3)
    with pytest.raises(ValueError, match="bandwidth"):
        jumprelu(z, theta, 0.0)
    with pytest.raises(ValueError, match="bandwidth"):
        step(z, theta, torch.tensor(0.1))
