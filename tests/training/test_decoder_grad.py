"""The decoder gradient's projection onto each row's tangent space, from its definition."""

from __future__ import annotations

import pytest
import torch

from gemma_scope_ext.training.decoder_grad import project_rows, tangent_part


def _rows(seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(9, 6, generator=g) * torch.linspace(0.5, 2.0, 9).unsqueeze(-1)  # not unit
    grad = torch.randn(9, 6, generator=g)
    grad[3] = 0.0  # a row no pair reached
    return grad, W


def test_tangent_part_removes_exactly_the_component_along_each_row():
    grad, W = _rows()
    out = tangent_part(grad, W)
    expected = grad.double() - (grad.double() * W.double()).sum(-1, keepdim=True) / (
        W.double().square().sum(-1, keepdim=True)
    ) * W.double()
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close((out * W).sum(-1), torch.zeros(9), rtol=0, atol=1e-5)


def test_project_rows_from_given_dot_products_equals_tangent_part_in_place():
    grad, W = _rows()
    expected = tangent_part(grad, W)
    dot = (grad.double() * W.double()).sum(-1)  # as the sparse step sums it: from pair products
    work = grad.clone()
    out = project_rows(work, W, dot)
    assert out.data_ptr() == work.data_ptr()  # in place: no second full-size gradient
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert (out[3] == 0).all()  # a zero row stays exactly zero
    with pytest.raises(AssertionError):  # negative control: other rows' dot products
        torch.testing.assert_close(project_rows(grad.clone(), W, dot.roll(1)), expected,
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
