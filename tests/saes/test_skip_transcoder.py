"""Gemma Scope 2's skip transcoder against hand-computed values, a plain-torch reference and SAELens's
stock ``JumpReLUSkipTranscoder`` on the same weights."""

from __future__ import annotations

import json

import pytest
import torch
from sae_lens import SAE
from sae_lens.saes.transcoder import JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig

import gemma_scope_ext  # noqa: F401  (registers the architecture)
from gemma_scope_ext.evals.passes import encode_decode
from gemma_scope_ext.saes.skip_transcoder import GemmaScopeSkipTranscoder

D_IN, D_SAE, D_OUT = 6, 10, 4


def random_params(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(D_IN, D_SAE, generator=g), "b_enc": 0.1 * torch.randn(D_SAE, generator=g),
        "threshold": 0.5 * torch.rand(D_SAE, generator=g), "W_dec": torch.randn(D_SAE, D_OUT, generator=g),
        "b_dec": torch.randn(D_OUT, generator=g), "W_skip": torch.randn(D_OUT, D_IN, generator=g),
    }  # fmt: skip


def plain(p: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f = JumpReLU(x W_enc + b_enc); y = f W_dec + b_dec + x W_skip^T, in float64."""
    p = {k: v.double() for k, v in p.items()}
    x = x.double()
    z = x @ p["W_enc"] + p["b_enc"]
    f = z * (z > p["threshold"])
    return f, f @ p["W_dec"] + p["b_dec"] + x @ p["W_skip"].T


def test_hand_computed_skip_transcoder():
    p = {"W_enc": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "b_enc": torch.zeros(2),
         "threshold": torch.tensor([0.5, 0.5]), "W_dec": torch.tensor([[1.0], [2.0]]),
         "b_dec": torch.tensor([0.1]), "W_skip": torch.tensor([[3.0, -1.0]])}  # fmt: skip
    tc = GemmaScopeSkipTranscoder.from_params(p, hook_name="blocks.0.mlp.hook_in",
                                              hook_name_out="blocks.0.hook_mlp_out")  # fmt: skip
    x = torch.tensor([[1.0, 0.2]])
    # f = [1, 0] (0.2 is under its threshold); y = 1 * 1 + 0.1 + (3 * 1 - 1 * 0.2) = 3.9
    torch.testing.assert_close(tc.encode(x), torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(tc(x), torch.tensor([[3.9]]))
    torch.testing.assert_close(tc.decode(tc.encode(x)), torch.tensor([[1.1]]))  # sparse part only
    assert tc.cfg.architecture() == "gemma_scope_jumprelu_skip_transcoder"


def test_equals_the_plain_reference_and_stock_sae_lens():
    p = random_params()
    ours = GemmaScopeSkipTranscoder.from_params(p)
    stock = JumpReLUSkipTranscoder(JumpReLUSkipTranscoderConfig(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT,
                                                            apply_b_dec_to_input=False))
    stock.load_state_dict(p)
    x = torch.randn(32, D_IN, generator=torch.Generator().manual_seed(1))
    f_ref, y_ref = plain(p, x)
    with torch.no_grad():
        y, f = ours.forward_with_activations(x)
        assert 0 < (f > 0).float().mean() < 1
        torch.testing.assert_close(f.double(), f_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x), stock(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x), y, rtol=0, atol=0)
        # The evaluator's encode/decode keeps the skip path (negative control: decode alone).
        torch.testing.assert_close(encode_decode(ours, x)[1], y)
        assert (ours.decode(f) - y).abs().max() > 0.5


def test_saved_folder_loads_in_sae_lens_with_identical_outputs(tmp_path):
    p = random_params(2)
    ours = GemmaScopeSkipTranscoder.from_params(p, hook_name="blocks.3.mlp.hook_in",
                                                hook_name_out="blocks.3.hook_mlp_out")  # fmt: skip
    ours.save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "gemma_scope_jumprelu_skip_transcoder" and cfg["d_out"] == D_OUT
    back = SAE.load_from_disk(tmp_path)
    assert type(back) is GemmaScopeSkipTranscoder
    assert back.cfg.metadata.hook_name_out == "blocks.3.hook_mlp_out"
    x = torch.randn(8, D_IN)
    torch.testing.assert_close(back(x), ours(x))


def test_bad_params_are_refused():
    p = random_params()
    with pytest.raises(ValueError, match="a skip transcoder needs W_skip"):
        GemmaScopeSkipTranscoder.from_params({k: v for k, v in p.items() if k != "W_skip"})
    with pytest.raises(ValueError, match=r"W_skip has shape \(6, 4\), expected \(d_out, d_in\)"):
        GemmaScopeSkipTranscoder.from_params({**p, "W_skip": p["W_skip"].T})
    tc = GemmaScopeSkipTranscoder.from_params(p)
    with pytest.raises(ValueError, match="expects inputs of width 6"):
        tc(torch.randn(2, 5))
