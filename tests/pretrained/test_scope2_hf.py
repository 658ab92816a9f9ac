"""Gemma Scope 2 SAEs loaded through both routes, spliced into a tiny Gemma 3, against Hugging Face.

The tiny Gemma 3 of ``tests/helpers/tiny_gemma3.py`` (gemma-3-270m's widths, 3 layers). Each SAE is spliced into the TL model (``gs.splice``, and SAELens's ``add_sae``)
and, by forward hooks, into the HF model at the module Gemma Scope 2 names; the logits must agree. SAELens's own ``gemma_3`` loader's hooks are
the negative controls: ``hook_mlp_in`` is the residual before the pre-MLP norm, and its attention
SAEs do not reshape hook_z.
"""

from __future__ import annotations

import dataclasses

import pytest
import sae_lens
import torch

from gemma_scope_ext.circuits.splice import splice
from gemma_scope_ext.pretrained import catalog
from gemma_scope_ext.pretrained.catalog import get_entry
from gemma_scope_ext.pretrained.loader import from_pretrained
from tests.helpers.hf_cache import use_hub_cache, write_safetensors
from tests.helpers.tiny_gemma3 import tiny_gemma3
from tests.pretrained.test_scope2_loader import file_tensors, reference

L = 1  # the global-attention layer of the three
CASES = {
    "res": ("gemma-scope-2-270m-pt-res", "layer_12_width_16k_l0_medium"),
    "mlp": ("gemma-scope-2-270m-pt-mlp", "layer_12_width_16k_l0_medium"),
    "att": ("gemma-scope-2-270m-pt-att", "layer_12_width_16k_l0_medium"),
    "transcoder": ("gemma-scope-2-270m-it-transcoders", "transcoder/layer_9_width_16k_l0_small"),
    "skip": ("gemma-scope-2-270m-it-transcoders", "transcoder/layer_9_width_16k_l0_small_affine"),
}


@pytest.fixture(scope="module")
def models():
    return tiny_gemma3()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    return use_hub_cache(tmp_path, monkeypatch)


def load_both(hub, monkeypatch, kind):
    """(file tensors, SAE via gs.from_pretrained, SAE via sae_lens.SAE.from_pretrained) at layer L."""
    release, sae_id = CASES[kind]
    entry = dataclasses.replace(get_entry(release, sae_id), width=40, layer=L)
    monkeypatch.setitem(catalog._load()[1][release], sae_id, entry)
    t = file_tensors(entry, seed=3)
    with torch.no_grad():  # scale the encoder to this model's activations so latents fire
        t["w_enc"] *= 4.0
    write_safetensors(hub, entry.repo_id, entry.path, t)
    return t, from_pretrained(release, sae_id), sae_lens.SAE.from_pretrained(release, sae_id)


def hf_module(hf, kind):
    layer = hf.model.layers[L]
    return {"res": layer, "mlp": layer.post_feedforward_layernorm, "att": layer.self_attn.o_proj,
            "transcoder": layer.post_feedforward_layernorm,
            "skip": layer.post_feedforward_layernorm}[kind]  # fmt: skip


def replace_output(t):
    def hook(module, inputs, out):
        if isinstance(out, tuple):
            return (reference(t, out[0])[1].float(), *out[1:])
        return reference(t, out)[1].float()

    return hook


def hf_spliced_logits(hf, tokens, kind, t):
    """HF logits with the SAE's output (from the file's tensors) at the module it was trained on."""
    layer, seen = hf.model.layers[L], {}
    handles = [layer.pre_feedforward_layernorm.register_forward_hook(
        lambda m, i, o: seen.__setitem__("mlp_in", o))]  # fmt: skip
    module = hf_module(hf, kind)
    if kind == "att":  # o_proj's input is what the SAE reads and replaces
        handles.append(module.register_forward_pre_hook(
            lambda m, args: (reference(t, args[0])[1].float(),)))  # fmt: skip
    elif kind in ("res", "mlp"):  # the SAE reads and replaces the module's output
        handles.append(module.register_forward_hook(replace_output(t)))
    else:  # transcoders read pre_feedforward_layernorm.output, replace post_feedforward's
        handles.append(module.register_forward_hook(
            lambda m, i, o: reference(t, seen["mlp_in"])[1].float()))  # fmt: skip
    try:
        with torch.no_grad():
            return hf(tokens).logits
    finally:
        for h in handles:
            h.remove()


def test_tiny_gemma3_equals_hugging_face(models):
    hf, tl, tokens = models
    with torch.no_grad():
        assert (hf(tokens).logits - tl(tokens)).abs().max() < 1e-4


@pytest.mark.parametrize("kind", list(CASES))
def test_spliced_sae_equals_hugging_face_with_the_sae_at_its_module(models, hub, monkeypatch, kind):
    hf, tl, tokens = models
    t, ours, via_sae_lens = load_both(hub, monkeypatch, kind)
    want = hf_spliced_logits(hf, tokens, kind, t)
    with torch.no_grad():
        clean = tl(tokens)
        assert (want - clean).abs().max() > 1e-2  # the splice changes the logits
        for sae in (ours, via_sae_lens):
            _, cache = tl.run_with_cache(tokens, names_filter=[sae.cfg.metadata.hook_name])
            feats = sae.encode(cache[sae.cfg.metadata.hook_name])  # hook_z: 4-d, flattened inside
            assert 0.02 < (feats > 0).float().mean() < 0.98
            with splice(tl, [sae], use_error_term=False):
                got = tl(tokens)
            assert (got - want).abs().max() < 1e-4, kind
            if kind == "skip":
                continue  # SAELens's HookedSAETransformer drops the skip path: see below
            tl.add_sae(sae, use_error_term=False)
            try:
                got = tl(tokens)
            finally:
                tl.reset_saes()
            assert (got - want).abs().max() < 1e-4, kind


def test_hooked_sae_transformer_drops_the_skip_path(models, hub, monkeypatch):
    """SAELens 6.54's HookedSAETransformer splices encode/decode and leaves out x W_skip^T."""
    hf, tl, tokens = models
    t, ours, _ = load_both(hub, monkeypatch, "skip")
    want = hf_spliced_logits(hf, tokens, "skip", t)
    t_without = {k: v for k, v in t.items() if k != "affine_skip_connection"}
    without_skip = hf_spliced_logits(hf, tokens, "transcoder", t_without)
    tl.add_sae(ours, use_error_term=False)
    try:
        with torch.no_grad():
            got = tl(tokens)
    finally:
        tl.reset_saes()
    assert (got - want).abs().max() > 1e-2
    assert (got - without_skip).abs().max() < 1e-4


def test_sae_lens_gemma_3_hooks_are_wrong_on_gemma3(models, hub, monkeypatch):
    hf, tl, tokens = models
    t, ours, _ = load_both(hub, monkeypatch, "transcoder")
    seen = {}
    h = hf.model.layers[L].pre_feedforward_layernorm.register_forward_hook(
        lambda m, i, o: seen.__setitem__("mlp_in", o))  # fmt: skip
    with torch.no_grad():
        hf(tokens)
    h.remove()
    with torch.no_grad():
        _, cache = tl.run_with_cache(tokens)
        assert ours.cfg.metadata.hook_name == f"blocks.{L}.mlp.hook_in"
        assert (cache[f"blocks.{L}.mlp.hook_in"] - seen["mlp_in"]).abs().max() < 1e-4
        # SAELens's gemma_3 loader names hook_mlp_in: it does not fire unless use_hook_mlp_in...
        assert f"blocks.{L}.hook_mlp_in" not in cache
        tl.set_use_hook_mlp_in(True)
        try:
            _, cache = tl.run_with_cache(tokens)
        finally:
            tl.set_use_hook_mlp_in(False)
        # ...and then it is the residual before the pre-MLP RMSNorm, far from the MLP's input.
        assert (cache[f"blocks.{L}.hook_mlp_in"] - seen["mlp_in"]).abs().max() > 1.0
        # Its attention SAEs keep reshape_activations="none" and fail on the 4-d hook_z.
        _, att, _ = load_both(hub, monkeypatch, "att")
        stock = sae_lens.saes.jumprelu_sae.JumpReLUSAE.from_dict(
            {**att.cfg.to_dict(), "architecture": "jumprelu", "reshape_activations": "none"})
        stock.load_state_dict(att.state_dict())
        tl.add_sae(stock)
        try:
            with pytest.raises(RuntimeError):
                tl(tokens)
        finally:
            tl.reset_saes()


def test_evaluate_on_gemma3_equals_hugging_face_cross_entropy(models, hub, monkeypatch):
    """gs.evaluate's delta loss for a Gemma Scope 2 skip transcoder, from HF's spliced logits."""
    from gemma_scope_ext.evals.metrics import evaluate

    hf, tl, tokens = models
    t, ours, _ = load_both(hub, monkeypatch, "skip")

    def ce(logits):
        logp = logits[:, :-1].log_softmax(-1)
        return -logp.gather(-1, tokens[:, 1:, None]).mean().item()

    with torch.no_grad():
        delta = ce(hf_spliced_logits(hf, tokens, "skip", t)) - ce(hf(tokens).logits)
    assert abs(delta) > 1e-3
    # No token of the prompt is special (ids 3..511), so every position counts.
    res = evaluate(tl, ours, tokens, progress=False, special_token_ids=[0, 1, 2])
    assert res.delta_loss == pytest.approx(delta, abs=1e-4)
