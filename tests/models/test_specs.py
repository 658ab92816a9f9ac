"""The model and site tables against TransformerLens's own hard-coded Gemma 2 configs."""

from __future__ import annotations

import dataclasses
import math

import pytest

from gemma_scope_ext import GEMMA2_MODELS, SITES, get_spec, hook_name, hook_name_out, site_d_in


def tl_config(name: str):
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import convert_hf_model_config

    return HookedTransformerConfig(**convert_hf_model_config(f"google/{name}"))


def test_six_official_models():
    assert sorted(GEMMA2_MODELS) == sorted(
        f"gemma-2-{size}{suffix}" for size in ("2b", "9b", "27b") for suffix in ("", "-it")
    )


@pytest.mark.parametrize("name", sorted(GEMMA2_MODELS))
def test_spec_equals_transformer_lens(name):
    cfg = tl_config(name)
    spec = GEMMA2_MODELS[name]
    assert spec == dataclasses.replace(get_spec_from_tl(cfg), name=name)
    assert spec.hf_name == f"google/{name}"


def get_spec_from_tl(cfg):
    from gemma_scope_ext.models import Gemma2Spec

    return Gemma2Spec.from_tl_config(cfg)


def test_hand_checked_sizes():
    two_b, nine_b, big = (GEMMA2_MODELS[n] for n in ("gemma-2-2b", "gemma-2-9b", "gemma-2-27b"))
    assert (two_b.d_model, two_b.n_layers, two_b.d_attn, two_b.d_mlp) == (2304, 26, 2048, 9216)
    assert (nine_b.d_model, nine_b.n_layers, nine_b.d_attn) == (3584, 42, 4096)
    assert (big.d_model, big.n_layers, big.d_attn, big.attn_scale) == (4608, 46, 4096, 12.0)
    assert two_b.attn_scale == math.sqrt(256)


@pytest.mark.parametrize("name", ["gemma-2-2b", "gemma-2-9b", "gemma-2-27b"])
def test_every_hook_exists_for_every_layer(name):
    """Hook names depend only on the block structure, so a narrow model of the same depth and
    attention pattern (TL's own config, shrunk) has exactly the real model's hook_dict."""
    from transformer_lens import HookedTransformer

    cfg = dataclasses.replace(
        tl_config(name), d_model=16, d_head=4, n_heads=2, n_key_value_heads=1, d_mlp=32,
        d_vocab=64, n_ctx=32, attn_scale=2.0, tokenizer_name=None,
    )  # fmt: skip
    hooks = set(HookedTransformer(cfg, move_to_device=False).hook_dict)
    spec = GEMMA2_MODELS[name]
    for site, s in SITES.items():
        for layer in range(spec.n_layers) if s.per_layer else [None]:
            assert hook_name(name, site, layer) in hooks
            assert hook_name_out(name, site, layer) in hooks


def test_site_widths():
    assert site_d_in("gemma-2-2b", "att") == 2048
    assert site_d_in("gemma-2-9b", "res") == 3584
    assert site_d_in("gemma-2-27b", "transcoder") == 4608
    assert hook_name("google/gemma-2-2b", "transcoder", 3) == "blocks.3.ln2.hook_normalized"
    assert hook_name_out("gemma-2-2b", "transcoder", 3) == "blocks.3.hook_mlp_out"
    assert hook_name("gemma-2-9b-it", "embedding") == "hook_embed"


def test_bad_input_names_the_valid_values():
    with pytest.raises(ValueError, match="gemma-2-2b.*gemma-2-27b-it"):
        hook_name("gemma-2-3b", "res", 0)
    with pytest.raises(ValueError, match="res, mlp, att, embedding, transcoder"):
        hook_name("gemma-2-2b", "resid", 0)
    with pytest.raises(ValueError, match=r"expected 0\.\.25"):
        hook_name("gemma-2-2b", "res", 26)
    with pytest.raises(ValueError, match=r"expected 0\.\.25"):
        hook_name("gemma-2-2b", "res", -1)
    with pytest.raises(ValueError, match="needs an integer layer"):
        hook_name("gemma-2-2b", "mlp")
    for layer in (0, 3):
        with pytest.raises(ValueError, match="has no layers"):
            hook_name("gemma-2-2b", "embedding", layer)
    with pytest.raises(ValueError, match="cannot read a model spec"):
        get_spec(3)


def test_spec_of_a_loaded_model(tiny_model):
    spec = get_spec(tiny_model)
    assert spec == dataclasses.replace(get_spec("tiny-gemma2"), name=spec.name)
    assert hook_name(tiny_model, "res", tiny_model.cfg.n_layers - 1) in tiny_model.hook_dict
    with pytest.raises(ValueError, match=r"expected 0\.\.3"):
        hook_name(tiny_model, "res", 4)
