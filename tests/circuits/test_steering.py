"""Steering and clamping: exact against hand-written hooks, predicted direction, generation."""

from __future__ import annotations

import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.sae import SAEMetadata

from gemma_scope_ext.circuits.attribution import logit_diff
from gemma_scope_ext.circuits.steering import clamp, steer
from gemma_scope_ext.models.backend import norm_gain

POS = 14
HOOK = "blocks.2.hook_resid_post"


def random_sae(cache, hook, d_sae=32, seed=0):
    """A JumpReLU SAE with random weights scaled to the activations at ``hook``."""
    g = torch.Generator().manual_seed(seed)
    x = cache[hook].flatten(-2) if hook.endswith("hook_z") else cache[hook]
    d_in, rms = x.shape[-1], x.pow(2).mean().sqrt()
    reshape = "hook_z" if hook.endswith("hook_z") else "none"
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=False,
                                        reshape_activations=reshape,
                                        metadata=SAEMetadata(hook_name=hook)))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / (d_in**0.5 * rms))
        sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=g) * rms * 0.3)
        sae.threshold.fill_(1.0)
    return sae


@pytest.fixture(scope="module")
def setup(tiny_model, eval_tokens):
    tokens = eval_tokens[:1, :POS + 2]
    _, cache = tiny_model.run_with_cache(tokens)
    metric = logit_diff(POS, int(tokens[0, POS + 1]), 7)
    saved = {}
    with torch.enable_grad():
        logits = tiny_model.run_with_hooks(
            tokens, fwd_hooks=[(HOOK, lambda x, hook: saved.setdefault("x", x))])
        (grad,) = torch.autograd.grad(metric(logits), [saved["x"]])
    return tokens, cache, metric, grad[0, POS]


def test_steer_adds_the_decoder_direction_exactly(kind_model, setup):
    tokens, cache, _, _ = setup
    sae = random_sae(cache, HOOK)
    by_hand = sae.W_dec[3].detach() * 2.0 - sae.W_dec[5].detach() * 0.5

    def add(x, hook):
        x = x.clone()
        x[:, [POS]] += by_hand
        return x

    expected = kind_model.run_with_hooks(tokens, fwd_hooks=[(HOOK, add)])
    with steer(kind_model, sae, [3, 5], [2.0, -0.5], positions=[POS]):
        steered = kind_model(tokens)
    torch.testing.assert_close(steered, expected)
    assert (steered - kind_model(tokens)).abs().max() > 1e-3
    # Attention sites: the direction is laid out head-major over hook_z.
    att = random_sae(cache, "blocks.1.attn.hook_z")
    with steer(kind_model, att, 0, 1.0):
        # The caching hook is added after the steering hook, so it sees the steered value.
        _, steered_cache = kind_model.run_with_cache(tokens, names_filter="blocks.1.attn.hook_z")
    z = steered_cache["blocks.1.attn.hook_z"]
    torch.testing.assert_close(z.flatten(-2) - cache["blocks.1.attn.hook_z"].flatten(-2),
                               att.W_dec[0].detach().expand(1, tokens.shape[1], -1))


def test_steering_moves_the_metric_as_the_gradient_predicts(tiny_model, setup):
    tokens, cache, metric, grad = setup
    sae = random_sae(cache, HOOK, seed=1)
    dots = sae.W_dec.detach() @ grad
    k = int(dots.abs().argmax())
    clean = float(metric(tiny_model(tokens)))
    for c in (0.05, -0.05):
        with steer(tiny_model, sae, k, c, positions=[POS]):
            change = float(metric(tiny_model(tokens))) - clean
        assert change == pytest.approx(c * float(dots[k]), rel=0.05)
    for c in (1.0, -1.0):  # a large push still goes the predicted way
        with steer(tiny_model, sae, k, c, positions=[POS]):
            change = float(metric(tiny_model(tokens))) - clean
        assert change * c * float(dots[k]) > 0


def test_steering_applies_during_generation(kind_model, setup):
    tokens, cache, _, _ = setup
    last = f"blocks.{kind_model.cfg.n_layers - 1}.hook_resid_post"
    sae = random_sae(cache, last)
    w_u = kind_model.W_U.detach()
    tok = int(w_u.norm(dim=0).argmax())  # no other column can outscore it against itself
    with torch.no_grad():
        sae.W_dec[0] = w_u[:, tok] / norm_gain(kind_model, kind_model.ln_final).detach()
    prompt = tokens[:, :8]
    plain = kind_model.generate(prompt, max_new_tokens=4, do_sample=False, verbose=False)
    with steer(kind_model, sae, 0, 1e3):
        steered = kind_model.generate(prompt, max_new_tokens=4, do_sample=False, verbose=False)
    assert steered[0, 8:].tolist() == [tok] * 4
    assert plain[0, 8:].tolist() != [tok] * 4


def test_clamp_holds_the_feature_and_moves_the_output_along_its_decoder(kind_model, setup):
    tokens, cache, _, _ = setup
    sae = random_sae(cache, HOOK, seed=2)
    f = sae.encode(cache[HOOK]).detach()
    k, value = int(f[0, POS].argmax()), 5.0
    delta = (value - f[0, :, k])[:, None] * sae.W_dec[k].detach()
    expected = kind_model.run_with_hooks(tokens, fwd_hooks=[(HOOK, lambda x, hook: x + delta)])
    with clamp(kind_model, sae, k, value) as sp:
        logits = kind_model(tokens)
        acts = sp.nodes(sae).features
    assert (acts[0, :, k] == value).all()
    torch.testing.assert_close(acts[0, :, :k], f[0, :, :k])
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="out of range"), clamp(kind_model, sae, 99, 1.0):
        pass
