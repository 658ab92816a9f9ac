"""The inference SAE: hand-set weights, SAELens's JumpReLUSAE on identical weights, sparse decoding."""

from __future__ import annotations

import pytest
import torch
from sae_lens import SAE
from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.sae import SAEMetadata

import gemma_scope_ext  # noqa: F401  (registers the architecture)
from gemma_scope_ext.plugin import register_with_sae_lens
from gemma_scope_ext.saes.sae import ARCHITECTURE, GemmaScopeSAE, GemmaScopeSAEConfig
from gemma_scope_ext.saes.sparse_decode import decode_active, use_sparse_decode

pytestmark = pytest.mark.usefixtures("one_thread")


def _random_sae(d_in=16, d_sae=64, seed=0, hook="blocks.0.hook_resid_post", **cfg_kwargs):
    gen = torch.Generator().manual_seed(seed)
    params = {
        "W_enc": torch.randn(d_in, d_sae, generator=gen) / d_in**0.5,
        "W_dec": torch.randn(d_sae, d_in, generator=gen) / d_in**0.5,
        "b_enc": torch.randn(d_sae, generator=gen) * 0.1,
        "b_dec": torch.randn(d_in, generator=gen),
        "threshold": torch.rand(d_sae, generator=gen) * 0.5,
    }
    sae = GemmaScopeSAE.from_params(params, hook_name=hook, model_name="tiny-gemma2")
    for k, v in cfg_kwargs.items():
        setattr(sae.cfg, k, v)
    return sae, params


def _stock(params, reshape="none", hook="blocks.0.hook_resid_post"):
    d_in, d_sae = params["W_enc"].shape
    cfg = JumpReLUSAEConfig(
        d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=False, reshape_activations=reshape,
        metadata=SAEMetadata(hook_name=hook),
    )  # fmt: skip
    sae = JumpReLUSAE(cfg)
    sae.load_state_dict(params)
    return sae


def test_forward_by_hand():
    # d_in 2, d_sae 3. z = x W_enc + b_enc; the encoder must not subtract b_dec.
    params = {
        "W_enc": torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]),
        "W_dec": torch.tensor([[1.0, 1.0], [0.0, 2.0], [3.0, 0.0]]),
        "b_enc": torch.tensor([0.0, -0.5, 0.0]),
        "b_dec": torch.tensor([10.0, 20.0]),
        "threshold": torch.tensor([0.5, 0.5, 3.0]),
    }
    sae = GemmaScopeSAE.from_params(params, hook_name="blocks.0.hook_resid_post")
    x = torch.tensor([[1.0, 2.0]])
    # z = [1, 2 - 0.5, 2 - 2] = [1, 1.5, 0]; gate z > [0.5, 0.5, 3] -> [1, 1.5, 0]
    assert sae.encode(x).tolist() == [[1.0, 1.5, 0.0]]
    # x_hat = 1 * [1, 1] + 1.5 * [0, 2] + b_dec = [11, 24]
    assert sae(x).tolist() == [[11.0, 24.0]]
    # equality with the threshold gates the latent off: x = [0.5, 0] gives z0 = 0.5
    assert sae.encode(torch.tensor([[0.5, 0.0]]))[0, 0].item() == 0.0


def test_matches_sae_lens_jumprelu_on_identical_weights():
    sae, params = _random_sae()
    stock = _stock(params)
    x = torch.randn(3, 5, 16) * 2
    torch.testing.assert_close(sae.encode(x), stock.encode(x))
    torch.testing.assert_close(sae(x), stock(x))
    assert (sae.encode(x) > 0).any() and (sae.encode(x) == 0).any()  # both regimes exercised


def test_hook_points_fire_with_sae_lens_names():
    sae, params = _random_sae()
    stock = _stock(params)
    x = torch.randn(4, 16)
    names = ["hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons",
             "hook_sae_output"]  # fmt: skip
    _, ours = sae.run_with_cache(x)
    _, theirs = stock.run_with_cache(x)
    for name in names:
        torch.testing.assert_close(ours[name], theirs[name])


def test_error_term_makes_the_output_exact():
    sae, _ = _random_sae()
    sae._use_error_term = True  # what HookedSAETransformer.add_sae(use_error_term=True) sets
    x = torch.randn(6, 16)
    torch.testing.assert_close(sae(x), x)


def test_hook_z_reshaping_matches_flattened_input():
    hook = "blocks.1.attn.hook_z"
    sae, params = _random_sae(d_in=12, hook=hook)
    assert sae.cfg.reshape_activations == "hook_z"
    z = torch.randn(2, 5, 3, 4)  # [batch, pos, head, d_head], flattened head-major
    out = sae(z)
    assert out.shape == z.shape
    flat = _stock(params).forward(z.reshape(2, 5, 12))
    torch.testing.assert_close(out, flat.reshape(2, 5, 3, 4))


def test_fold_w_dec_norm_keeps_outputs():
    sae, _ = _random_sae()
    x = torch.randn(8, 16)
    before = sae(x)
    sae.fold_W_dec_norm()
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(64))
    torch.testing.assert_close(sae(x), before, rtol=1e-5, atol=1e-5)


def _sparse_acts(n, d_sae, l0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    acts = torch.zeros(n, d_sae)
    idx = torch.rand(n, d_sae, generator=gen).topk(l0, dim=-1).indices
    acts.scatter_(1, idx, torch.rand(n, l0, generator=gen) + 0.1)
    return acts


def test_decode_active_equals_dense_values_and_gradients():
    acts = _sparse_acts(10, 300, 7)
    acts[3] = 0.0  # a row with no active latent
    W = torch.randn(300, 20, dtype=torch.float32)
    g = torch.randn(10, 20)
    a1, w1 = acts.clone().requires_grad_(True), W.clone().requires_grad_(True)
    a2, w2 = acts.clone().requires_grad_(True), W.clone().requires_grad_(True)
    out_sparse, out_dense = decode_active(a1, w1), a2 @ w2
    torch.testing.assert_close(out_sparse, out_dense)
    (out_sparse * g).sum().backward()
    (out_dense * g).sum().backward()
    torch.testing.assert_close(a1.grad, a2.grad)  # inactive latents get their gradient too
    torch.testing.assert_close(w1.grad, w2.grad)


def test_decode_active_keeps_leading_dims():
    acts = _sparse_acts(12, 50, 3).reshape(3, 4, 50)
    W = torch.randn(50, 6)
    torch.testing.assert_close(decode_active(acts, W), acts @ W)


def test_sparse_path_is_taken_at_gemma_scope_sparsity_and_agrees():
    d_in, d_sae = 256, 16384  # d_in * d_sae above SPARSE_MIN_WORK
    sae = GemmaScopeSAE(GemmaScopeSAEConfig(d_in=d_in, d_sae=d_sae))
    acts = _sparse_acts(8, d_sae, 70)
    assert use_sparse_decode(acts, sae.W_dec)
    assert not use_sparse_decode(torch.rand(8, d_sae) + 0.1, sae.W_dec)  # dense acts
    with torch.no_grad():
        sae.W_dec.normal_()
        sae.b_dec.normal_()
        dense = acts @ sae.W_dec + sae.b_dec
        torch.testing.assert_close(sae.decode(acts), dense, rtol=1e-5, atol=1e-4)


def test_registered_and_round_trips_through_sae_lens(tmp_path):
    assert SAE_CLASS_REGISTRY[ARCHITECTURE] == (GemmaScopeSAE, GemmaScopeSAEConfig)
    register_with_sae_lens()  # a second registration is harmless
    assert ARCHITECTURE in SAE_TRAINING_CLASS_REGISTRY
    sae, _ = _random_sae()
    sae.save_model(tmp_path)
    loaded = SAE.load_from_disk(tmp_path)
    assert type(loaded) is GemmaScopeSAE and loaded.cfg.apply_b_dec_to_input is False
    x = torch.randn(5, 16)
    torch.testing.assert_close(loaded(x), sae(x))


def test_from_params_rejects_wrong_shapes():
    _, params = _random_sae()
    params["b_dec"] = torch.zeros(15)
    with pytest.raises(ValueError, match="b_dec has shape"):
        GemmaScopeSAE.from_params(params)
    del params["b_dec"]
    with pytest.raises(ValueError, match="must hold exactly"):
        GemmaScopeSAE.from_params(params)


def test_embedding_weights_need_an_explicit_scale():
    """Released embedding SAEs saw unscaled embeddings; hook_embed holds s * e, s = sqrt(d_model)."""
    _, params = _random_sae()
    with pytest.raises(ValueError, match="embedding_scale"):
        GemmaScopeSAE.from_params(params, hook_name="hook_embed")
    s = 4.0
    released = GemmaScopeSAE.from_params(params, hook_name="blocks.0.hook_resid_post")
    on_hook = GemmaScopeSAE.from_params(params, hook_name="hook_embed", embedding_scale=s)
    e = torch.randn(7, 16) * 2
    with torch.no_grad():  # the same latents, and the reconstruction of s * e is s * x_hat(e)
        torch.testing.assert_close(on_hook.encode(s * e), released.encode(e))
        torch.testing.assert_close(on_hook(s * e), s * released(e))
        assert released.encode(e).count_nonzero() > 0
    as_is = GemmaScopeSAE.from_params(params, hook_name="hook_embed", embedding_scale=1.0)
    torch.testing.assert_close(as_is.W_dec, released.W_dec)
