"""Bad weights and inputs to the inference classes get errors that name the culprit."""

from __future__ import annotations

import pytest
import torch

from gemma_scope_ext.saes import GemmaScopeSAE, GemmaScopeTranscoder

D_IN, D_SAE, D_OUT = 4, 6, 3


def params(d_out=D_IN):
    g = torch.Generator().manual_seed(0)
    return {"W_enc": torch.randn(D_IN, D_SAE, generator=g),
            "W_dec": torch.randn(D_SAE, d_out, generator=g),
            "b_enc": torch.zeros(D_SAE), "b_dec": torch.zeros(d_out),
            "threshold": torch.full((D_SAE,), 0.1)}


@pytest.mark.parametrize("name", ["W_enc", "W_dec"])
def test_a_transposed_matrix_is_named(name):
    bad = {**params(), name: params()[name].T.contiguous()}
    with pytest.raises(ValueError, match=rf"^{name} has shape .* \(it looks transposed\)"):
        GemmaScopeSAE.from_params(bad)


def test_a_wrong_bias_is_named_not_the_matrix():
    with pytest.raises(ValueError, match=r"^b_enc has shape \(5,\), expected \(6,\)"):
        GemmaScopeSAE.from_params({**params(), "b_enc": torch.zeros(5)})


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(value):
    bad = params()
    bad["W_dec"][2, 1] = value
    with pytest.raises(ValueError, match=r"W_dec holds 1 NaN or infinite values \(first at flat index 9\)"):
        GemmaScopeSAE.from_params(bad)
    GemmaScopeSAE.from_params(params())  # the same weights without the bad value load


def test_negative_thresholds_are_refused():
    bad = {**params(), "threshold": torch.tensor([0.1, -0.2, 0.0, 0.3, -1.0, 0.0])}
    with pytest.raises(ValueError, match=r"2 thresholds are negative \(min -1\)"):
        GemmaScopeSAE.from_params(bad)


def test_wrong_width_input_names_the_hook_and_widths():
    sae = GemmaScopeSAE.from_params(params(), hook_name="blocks.0.hook_resid_post")
    with pytest.raises(ValueError, match=r"at 'blocks.0.hook_resid_post' expects inputs of width 4 .*"
                                         r"got shape \(2, 5\)"):
        sae(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"expects feature activations of width 6"):
        sae.decode(torch.randn(2, 5))
    assert sae(torch.randn(2, D_IN)).shape == (2, D_IN)


def test_hook_z_inputs_are_checked_after_flattening():
    p = {**params(), "W_enc": torch.randn(8, D_SAE), "W_dec": torch.randn(D_SAE, 8),
         "b_dec": torch.zeros(8)}
    sae = GemmaScopeSAE.from_params(p, hook_name="blocks.0.attn.hook_z")
    assert sae(torch.randn(2, 3, 2, 4)).shape == (2, 3, 2, 4)  # 2 heads x 4 = 8
    with pytest.raises(ValueError, match=r"expects inputs of width 8 .* got shape \(2, 3, 6\)"):
        sae(torch.randn(2, 3, 2, 3))  # 2 heads x 3: another model's hook_z


def test_transcoder_inputs_are_checked_too():
    tc = GemmaScopeTranscoder.from_params(params(D_OUT), hook_name="blocks.1.ln2.hook_normalized",
                                          hook_name_out="blocks.1.hook_mlp_out")
    assert tc(torch.randn(5, D_IN)).shape == (5, D_OUT)
    with pytest.raises(ValueError, match=r"at 'blocks.1.ln2.hook_normalized' expects inputs of "
                                         r"width 4"):
        tc(torch.randn(5, D_OUT))
