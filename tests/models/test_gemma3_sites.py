"""Every Gemma Scope 2 site's TransformerLens hook against the Hugging Face Gemma 3 implementation.

The reference tensors come from forward hooks on the HF modules Gemma Scope 2 names (its
``hf_hook_point_in``/``_out``): ``model.layers.L.output``, ``post_feedforward_layernorm.output``,
``self_attn.o_proj.input`` and ``pre_feedforward_layernorm.output``. A wrong hook (the pre-gain
``ln2.hook_normalized``, the pre-norm residual SAELens's gemma_3 loader assigns to transcoders) or a
broken model detail (window, local/global pattern, attention scale, either rope base, rope scaling)
must fail the same comparison.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gemma_scope_ext import add_mlp_input_hooks, hook_name, hook_name_out, site_d_in
from gemma_scope_ext.models.gemma3 import SITES, set_attn_scale, tl_config_from_hf
from gemma_scope_ext.models.text import sample_tokens

TOL = 1e-4
SITE_NAMES = ["res", "mlp", "att", "transcoder", "transcoder_skip"]


@pytest.fixture(scope="module")
def tokens(tiny_gemma3_model):
    """8 held-out rows of 64 tokens (4x the sliding window), each starting with BOS."""
    return sample_tokens(tiny_gemma3_model.tokenizer, n_seqs=8, seq_len=64, split="eval")


@pytest.fixture(scope="module")
def reference(tiny_gemma3_hf_model, tokens):
    """Tensors at each Gemma Scope 2 site (and at the wrong places), from HF forward hooks."""
    hf = tiny_gemma3_hf_model
    ref: dict[str, torch.Tensor] = {}
    handles = []

    def keep(key, pre=False):
        def hook(module, args, output=None):
            value = args[0] if pre else (output[0] if isinstance(output, tuple) else output)
            ref[key] = value.detach()

        return hook

    for i, layer in enumerate(hf.model.layers):
        handles += [
            layer.register_forward_hook(keep(f"res{i}")),
            layer.post_feedforward_layernorm.register_forward_hook(keep(f"mlp{i}")),
            layer.mlp.register_forward_hook(keep(f"mlp_prenorm{i}")),
            layer.self_attn.o_proj.register_forward_pre_hook(keep(f"att{i}", pre=True)),
            layer.pre_feedforward_layernorm.register_forward_hook(keep(f"transcoder{i}")),
            layer.pre_feedforward_layernorm.register_forward_pre_hook(keep(f"resid_mid{i}", True)),
        ]
    try:
        with torch.no_grad():
            ref["logits"] = hf(tokens).logits
    finally:
        for h in handles:
            h.remove()
    return ref


@pytest.fixture(scope="module")
def tl_cache(tiny_gemma3_model, tokens):
    with torch.no_grad():
        return tiny_gemma3_model.run_with_cache(tokens)


def tl_site(cache, model, site, layer):
    acts = cache[hook_name(model, site, layer)]
    return acts.flatten(-2) if site == "att" else acts  # [b, p, h, d] -> [b, p, h*d], head-major


def gap(a, b) -> float:
    return (a - b).abs().max().item()


def test_the_tiny_model_exercises_gemma3(tiny_gemma3_model, tokens):
    cfg = tiny_gemma3_model.cfg
    assert tokens.shape[1] > 2 * cfg.window_size
    assert (tokens[:, 0] == tiny_gemma3_model.tokenizer.bos_token_id).all()
    assert {"local", "global"} == set(cfg.attn_types) and cfg.attn_types[2] == "global"
    assert cfg.use_qk_norm and cfg.rotary_base != cfg.rotary_base_local
    assert cfg.rotary_scaling_factor == 8.0 and cfg.n_key_value_heads < cfg.n_heads
    assert cfg.attn_scale**2 == pytest.approx(32) and cfg.d_head == 24
    norms = [b.ln2.w for b in tiny_gemma3_model.blocks]  # TL holds Gemma's 1 + w
    assert min((w - 1).abs().max().item() for w in norms) > 0.05


def test_logits_match_hf(reference, tl_cache):
    logits, _ = tl_cache
    assert gap(logits, reference["logits"]) < TOL


@pytest.mark.parametrize("site", SITE_NAMES)
def test_every_layer_matches_hf(site, reference, tl_cache, tiny_gemma3_model):
    _, cache = tl_cache
    key = "transcoder" if site == "transcoder_skip" else site
    for layer in range(tiny_gemma3_model.cfg.n_layers):
        ours = tl_site(cache, tiny_gemma3_model, site, layer)
        assert ours.shape[-1] == site_d_in(tiny_gemma3_model, site)
        assert gap(ours, reference[f"{key}{layer}"]) < TOL, (site, layer)


@pytest.mark.parametrize("site", ["transcoder", "transcoder_skip"])
def test_transcoder_output_hook_is_the_mlp_output(site, reference, tl_cache, tiny_gemma3_model):
    _, cache = tl_cache
    for layer in range(tiny_gemma3_model.cfg.n_layers):
        out = cache[hook_name_out(tiny_gemma3_model, site, layer)]
        assert gap(out, reference[f"mlp{layer}"]) < TOL


# One folder of each kind in a Gemma Scope 2 repo, and the site of the table it belongs to.
FOLDERS = {"res": "resid_post/layer_{L}_width_16k_l0_small",
           "mlp": "mlp_out/layer_{L}_width_16k_l0_small",
           "att": "attn_out/layer_{L}_width_16k_l0_small",
           "transcoder": "transcoder/layer_{L}_width_16k_l0_small",
           "transcoder_skip": "transcoder/layer_{L}_width_16k_l0_small_affine"}  # fmt: skip


def _hf_value(hf, point: str, tokens) -> torch.Tensor:
    """The tensor at a Gemma Scope 2 ``hf_hook_point`` (``model.layers.3.X.output``/``.input``)."""
    path, _, end = point.rpartition(".")
    module = hf.get_submodule(path)
    seen = {}

    def keep(mod, args, output=None):
        value = args[0] if end == "input" else output
        seen["x"] = (value[0] if isinstance(value, tuple) else value).detach()

    handle = (module.register_forward_pre_hook(keep) if end == "input"
              else module.register_forward_hook(keep))  # fmt: skip
    try:
        with torch.no_grad():
            hf(tokens)
    finally:
        handle.remove()
    return seen["x"]


@pytest.mark.parametrize("site", SITE_NAMES)
def test_sites_equal_the_hf_hook_points_gemma_scope_2_records(site, tiny_gemma3_hf_model, tl_cache,
                                                              tiny_gemma3_model, tokens):
    """The hook points come from SAELens's reading of Gemma Scope 2 folders (what it uses when a
    folder has no config.json), not from this test: every site, input and output, equals them."""
    from sae_lens.loading.pretrained_sae_loaders import _infer_gemma_3_raw_cfg_dict

    _, cache = tl_cache
    layer = 3
    raw = _infer_gemma_3_raw_cfg_dict("google/gemma-scope-2-1b-pt", FOLDERS[site].format(L=layer))
    assert raw.get("affine_connection", False) == (site == "transcoder_skip")
    points = [(raw["hf_hook_point_in"], hook_name(tiny_gemma3_model, site, layer))]
    if "hf_hook_point_out" in raw:
        points.append((raw["hf_hook_point_out"], hook_name_out(tiny_gemma3_model, site, layer)))
    for point, hook in points:
        ours = cache[hook]
        ours = ours.flatten(-2) if hook.endswith("hook_z") else ours
        assert gap(ours, _hf_value(tiny_gemma3_hf_model, point, tokens)) < TOL, (point, hook)
    assert set(SITES) == set(SITE_NAMES)


def test_post_gain_normalised_input_is_the_same_value(reference, tl_cache, tiny_gemma3_model):
    """mlp.hook_in equals ln2.hook_normalized * ln2.w: TL folds Gemma's 1 + w into ln2.w."""
    _, cache = tl_cache
    for layer in range(tiny_gemma3_model.cfg.n_layers):
        folded = cache[f"blocks.{layer}.ln2.hook_normalized"] * tiny_gemma3_model.blocks[layer].ln2.w
        assert gap(folded, reference[f"transcoder{layer}"]) < TOL


# Negative controls: the same comparisons notice a wrong hook or a broken model detail.


def test_wrong_hooks_are_noticed(reference, tl_cache, tiny_gemma3_model):
    _, cache = tl_cache
    for layer in range(tiny_gemma3_model.cfg.n_layers):
        want = reference[f"transcoder{layer}"]
        # Gemma Scope 1's transcoder input (before the gain) is not Gemma Scope 2's.
        assert gap(cache[f"blocks.{layer}.ln2.hook_normalized"], want) > 100 * TOL
        # SAELens's gemma_3 loader assigns hook_mlp_in: the residual before the norm, and a
        # hook that never fires unless use_hook_mlp_in is set.
        assert f"blocks.{layer}.hook_mlp_in" not in cache
        assert gap(cache[f"blocks.{layer}.hook_resid_mid"], want) > 100 * TOL
        assert gap(reference[f"resid_mid{layer}"], cache[f"blocks.{layer}.hook_resid_mid"]) < TOL
        # hook_mlp_out is after the post-MLP norm; the MLP's own output is not.
        mlp_pre = reference[f"mlp_prenorm{layer}"]
        assert gap(cache[hook_name(tiny_gemma3_model, "mlp", layer)], mlp_pre) > 100 * TOL
    assert gap(cache["blocks.1.hook_resid_pre"], reference["res1"]) > 100 * TOL


def test_the_added_hook_edits_the_mlp_input(tiny_gemma3_model, tokens):
    """A hook on mlp.hook_in changes what the MLP computes: zero input, zero MLP output."""
    name = hook_name(tiny_gemma3_model, "transcoder", 2)
    zero = [(name, lambda x, hook: torch.zeros_like(x))]
    with torch.no_grad(), tiny_gemma3_model.hooks(fwd_hooks=zero):
        _, cache = tiny_gemma3_model.run_with_cache(tokens[:1], names_filter="blocks.2.hook_mlp_out")
    assert cache["blocks.2.hook_mlp_out"].abs().max().item() == 0.0


def _bare_model(hf, **change):
    """A HookedTransformer from TL's own conversion, with no package hooks and a changed config."""
    from transformer_lens import HookedTransformer

    cfg = tl_config_from_hf(hf.config)
    model = HookedTransformer(dataclasses.replace(cfg, **change), move_to_device=False)
    model.load_and_process_state_dict(
        hf_to_tl(hf, cfg), fold_ln=False, center_writing_weights=False, center_unembed=False,
        fold_value_biases=False, refactor_factored_attn_matrices=False,
    )  # fmt: skip
    return model.eval()


def hf_to_tl(hf, cfg):
    from transformer_lens.pretrained.weight_conversions.gemma import convert_gemma_weights

    return convert_gemma_weights(hf, cfg)


def test_a_model_without_the_hook_is_refused_until_the_helper_adds_it(
    tiny_gemma3_hf_model, reference, tokens
):
    model = _bare_model(tiny_gemma3_hf_model)
    with pytest.raises(ValueError, match=r"add_mlp_input_hooks\(model\)"):
        hook_name(model, "transcoder", 3)
    assert hook_name(model, "res", 3) == "blocks.3.hook_resid_post"  # other sites need nothing
    assert add_mlp_input_hooks(add_mlp_input_hooks(model)) is model  # idempotent
    fired = []
    count = [("blocks.3.mlp.hook_in", lambda x, hook: fired.append(1))]
    with torch.no_grad(), model.hooks(fwd_hooks=count):
        _, cache = model.run_with_cache(tokens, names_filter=hook_name(model, "transcoder", 3))
    assert len(fired) == 1  # added once, fires once
    assert gap(cache["blocks.3.mlp.hook_in"], reference["transcoder3"]) < TOL


def test_sae_lens_hooked_sae_transformer_keeps_its_own_hook(tiny_gemma3_hf_model, reference, tokens):
    """HookedSAETransformer adds mlp.hook_in itself; the helper leaves it (no double hook)."""
    from sae_lens import HookedSAETransformer

    cfg = tl_config_from_hf(tiny_gemma3_hf_model.config)
    model = HookedSAETransformer(cfg, move_to_device=False)
    model.load_and_process_state_dict(
        hf_to_tl(tiny_gemma3_hf_model, cfg), fold_ln=False, center_writing_weights=False,
        center_unembed=False, fold_value_biases=False, refactor_factored_attn_matrices=False,
    )  # fmt: skip
    add_mlp_input_hooks(model)
    assert not model.blocks[0].mlp._forward_pre_hooks
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter="blocks.4.mlp.hook_in")
    assert gap(cache["blocks.4.mlp.hook_in"], reference["transcoder4"]) < TOL


def _broken(cfg):
    swapped = ["global" if t == "local" else "local" for t in cfg.attn_types]
    return {
        "window +1": dict(window_size=cfg.window_size + 1),
        "window -1": dict(window_size=cfg.window_size - 1),
        "local/global swapped": dict(attn_types=swapped),
        "attention scale sqrt(d_head) (TransformerLens's Gemma 3 default)": dict(
            attn_scale=cfg.d_head**0.5
        ),
        "global rope base": dict(rotary_base=cfg.rotary_base * 2),
        "local rope base": dict(rotary_base_local=cfg.rotary_base_local * 2),
        "no linear rope scaling on global layers": dict(rotary_scaling_factor=1.0),
    }


def test_broken_model_details_are_noticed(tiny_gemma3_hf_model, reference, tokens):
    cfg = tl_config_from_hf(tiny_gemma3_hf_model.config)
    for what, change in _broken(cfg).items():
        with torch.no_grad():
            logits = _bare_model(tiny_gemma3_hf_model, **change)(tokens)
        moved = gap(logits, reference["logits"])
        print(f"{what}: {moved:.3g}")
        assert moved > 100 * TOL, f"{what}: logits moved only {moved:.2e}"


def test_set_attn_scale_corrects_a_loaded_model(tiny_gemma3_hf_model, reference, tokens):
    """TransformerLens's sqrt(d_head) scale, then the loader's correction from the spec table."""
    model = _bare_model(tiny_gemma3_hf_model, attn_scale=24**0.5)
    with torch.no_grad():
        assert gap(model(tokens), reference["logits"]) > 100 * TOL
        set_attn_scale(model, 32**0.5)
        assert gap(model(tokens), reference["logits"]) < TOL
