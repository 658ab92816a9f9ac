"""Every Gemma Scope site's TransformerLens hook against the Hugging Face Gemma 2 implementation.

Each check runs on the HookedTransformer and on the TransformerBridge of the same weights.

The reference tensors come from forward hooks on the HF modules of the same weights; a broken detail
(sliding window off by one, local/global swapped, wrong attention scale, a soft cap missing) or a wrong
hook (post-gain instead of pre-gain, MLP output before the post-norm) must fail the same comparison.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gemma_scope_ext import SITES, get_spec, hook_name, hook_name_out, site_d_in
from gemma_scope_ext.models import tiny_spec
from gemma_scope_ext.models.backend import MODEL_KINDS
from gemma_scope_ext.models.gemma2 import tl_config_from_hf

TOL = 1e-4
STRESS_TOL = 1e-3  # fp32 rounding at logits near the cap of 30 (measured ~3e-4)


def hf_reference(hf, tokens):
    """Tensors at each Gemma Scope site, read off the HF modules with forward hooks."""
    layers = hf.model.layers
    ref: dict[str, torch.Tensor] = {}
    handles = []

    def keep(key, pre=False, fn=lambda t: t):
        def hook(module, args, output=None):
            value = args[0] if pre else (output[0] if isinstance(output, tuple) else output)
            ref[key] = fn(value.detach())

        return hook

    def rms_normalise(x):  # the pre-MLP RMSNorm without its (1 + w) gain
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + hf.config.rms_norm_eps)

    handles.append(layers[0].register_forward_pre_hook(keep("embedding", pre=True)))
    for i, layer in enumerate(layers):
        handles += [
            layer.register_forward_hook(keep(f"res{i}")),
            layer.post_feedforward_layernorm.register_forward_hook(keep(f"mlp{i}")),
            layer.mlp.register_forward_hook(keep(f"mlp_prenorm{i}")),
            layer.self_attn.o_proj.register_forward_pre_hook(keep(f"att{i}", pre=True)),
            layer.pre_feedforward_layernorm.register_forward_pre_hook(
                keep(f"transcoder{i}", pre=True, fn=rms_normalise)
            ),
        ]
    try:
        with torch.no_grad():
            ref["logits"] = hf(tokens).logits
    finally:
        for h in handles:
            h.remove()
    return ref


def tl_site(cache, model, site, layer):
    acts = cache[hook_name(model, site, layer)]
    return acts.flatten(-2) if site == "att" else acts  # [b, p, h, d] -> [b, p, h*d], head-major


@pytest.fixture(scope="module")
def reference(tiny_hf, eval_tokens):
    return hf_reference(tiny_hf, eval_tokens)


@pytest.fixture(scope="module", params=MODEL_KINDS)
def tl_cache(request, eval_tokens):
    """Logits and every hook of the tiny model as each kind: HookedTransformer, TransformerBridge."""
    model = request.getfixturevalue("tiny_model" if request.param == "hooked" else "tiny_bridge")
    with torch.no_grad():
        logits, cache = model.run_with_cache(eval_tokens)
    return logits, cache


def test_site_names_are_the_same_on_a_bridge(tiny_model, tiny_bridge):
    assert get_spec(tiny_bridge) == get_spec(tiny_model) == tiny_spec()
    for site, s in SITES.items():
        for layer in range(tiny_model.cfg.n_layers) if s.per_layer else [None]:
            names = hook_name(tiny_bridge, site, layer), hook_name_out(tiny_bridge, site, layer)
            assert names == (hook_name(tiny_model, site, layer),
                             hook_name_out(tiny_model, site, layer))
            assert all(n in tiny_bridge.hook_dict for n in names)
        assert site_d_in(tiny_bridge, site) == site_d_in(tiny_model, site)


def test_sequences_exceed_the_sliding_window(tiny_model, eval_tokens):
    assert eval_tokens.shape[1] > 2 * tiny_model.cfg.window_size
    assert (eval_tokens[:, 0] == tiny_model.tokenizer.bos_token_id).all()


def test_logits_match_hf(reference, tl_cache):
    logits, _ = tl_cache
    assert (logits - reference["logits"]).abs().max() < TOL


@pytest.mark.parametrize("site", ["res", "mlp", "att", "transcoder"])
def test_every_layer_matches_hf(site, reference, tl_cache, tiny_model):
    _, cache = tl_cache
    for layer in range(tiny_model.cfg.n_layers):
        ours = tl_site(cache, tiny_model, site, layer)
        theirs = reference[f"{site}{layer}"]
        assert ours.shape[-1] == site_d_in(tiny_model, site)
        assert (ours - theirs).abs().max() < TOL, (site, layer)


def test_embedding_matches_hf(reference, tl_cache, tiny_model):
    _, cache = tl_cache
    ours = cache[hook_name(tiny_model, "embedding")]
    assert (ours - reference["embedding"]).abs().max() < TOL


def test_transcoder_output_hook_is_the_mlp_output(reference, tl_cache, tiny_model):
    _, cache = tl_cache
    for layer in range(tiny_model.cfg.n_layers):
        out = cache[hook_name_out(tiny_model, "transcoder", layer)]
        assert (out - reference[f"mlp{layer}"]).abs().max() < TOL


# Negative controls: the same comparison must notice a wrong hook or a broken model detail.


def test_wrong_hooks_are_noticed(reference, tl_cache, tiny_model):
    _, cache = tl_cache
    layer = 1
    post_gain = cache[f"blocks.{layer}.ln2.hook_normalized"] * tiny_model.blocks[layer].ln2.w
    assert (post_gain - reference[f"transcoder{layer}"]).abs().max() > 100 * TOL
    pre_norm_mlp = reference[f"mlp_prenorm{layer}"]
    assert (cache[hook_name(tiny_model, "mlp", layer)] - pre_norm_mlp).abs().max() > 100 * TOL
    resid_pre = cache[f"blocks.{layer}.hook_resid_pre"]
    assert (resid_pre - reference[f"res{layer}"]).abs().max() > 100 * TOL


def _broken(cfg):
    swapped = ["global" if t == "local" else "local" for t in cfg.attn_types]
    return {
        "window +1": dict(window_size=cfg.window_size + 1),
        "window -1": dict(window_size=cfg.window_size - 1),
        "local/global swapped": dict(attn_types=swapped),
        "attention scale sqrt(d_head)": dict(attn_scale=cfg.d_head**0.5),
        "no attention soft cap": dict(attn_scores_soft_cap=-1.0),
        "no logit soft cap": dict(output_logits_soft_cap=-1.0),
        "rotary base": dict(rotary_base=cfg.rotary_base * 2),
    }


@pytest.fixture(scope="module")
def stressed_hf(tiny_hf):
    """A copy scaled so attention scores and logits reach their soft caps' ranges (50 and 30)."""
    import copy

    from gemma_scope_ext.models.loading import hooked_from_hf

    with torch.no_grad():
        logits, cache = hooked_from_hf(tiny_hf).run_with_cache(
            torch.arange(4, 68)[None], names_filter=lambda n: "attn_scores" in n
        )
    top = max(v.masked_fill(v.isinf(), 0).abs().max().item() for v in cache.values())
    hf = copy.deepcopy(tiny_hf)
    with torch.no_grad():
        for layer in hf.model.layers:  # scores are linear in W_Q before the cap: aim at ~2x cap
            layer.self_attn.q_proj.weight.mul_(100.0 / top)
        gain = 1.0 + hf.model.norm.weight  # Gemma's RMSNorm multiplies by (1 + w)
        hf.model.norm.weight.copy_(gain * 60.0 / logits.abs().max() - 1.0)
    return hf


def test_stressed_model_matches_and_reaches_the_soft_cap(stressed_hf, eval_tokens):
    from gemma_scope_ext.models.loading import hooked_from_hf

    model = hooked_from_hf(stressed_hf)
    with torch.no_grad():
        logits, cache = model.run_with_cache(eval_tokens, names_filter=lambda n: "attn_scores" in n)
        ref = stressed_hf(eval_tokens).logits
    assert (logits - ref).abs().max() < STRESS_TOL
    top = max(v.masked_fill(v.isinf(), 0).abs().max().item() for v in cache.values())
    assert top > 25.0  # half the cap of 50: tanh capping is far from the identity here
    assert logits.abs().max() > 15.0  # likewise for the final cap of 30


def test_broken_model_details_are_noticed(stressed_hf, eval_tokens):
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions.gemma import convert_gemma_weights

    cfg = tl_config_from_hf(stressed_hf.config)
    with torch.no_grad():
        ref = stressed_hf(eval_tokens).logits
    for what, change in _broken(cfg).items():
        broken = HookedTransformer(dataclasses.replace(cfg, **change), move_to_device=False)
        broken.load_and_process_state_dict(  # consumes the dict: convert afresh each time
            convert_gemma_weights(stressed_hf, cfg), fold_ln=False, center_writing_weights=False, center_unembed=False,
            fold_value_biases=False, refactor_factored_attn_matrices=False,
        )
        with torch.no_grad():
            logits = broken(eval_tokens)
        gap = (logits - ref).abs().max().item()
        print(f"{what}: {gap:.3g}")
        assert gap > 100 * STRESS_TOL, f"{what}: logits moved only {gap:.2e}"
