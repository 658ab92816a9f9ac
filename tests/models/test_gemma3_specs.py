"""The Gemma 3 model and site tables against TransformerLens's own hard-coded Gemma 3 configs.

One difference is deliberate and checked as such: TransformerLens scales attention by sqrt(d_head)
for every Gemma 3, the table by sqrt(query_pre_attn_scalar); they differ only for 27b (168 vs 128).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from gemma_scope_ext import GEMMA3_MODELS, get_spec, hook_name, hook_name_out, site_d_in
from gemma_scope_ext.models import add_mlp_input_hooks, family_of, get_family
from gemma_scope_ext.models.gemma3 import SITES, tl_config_from_hf

SIZES = ("270m", "1b", "4b", "12b", "27b")


def tl_config(name: str):
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import convert_hf_model_config

    return HookedTransformerConfig(**convert_hf_model_config(f"google/{name}"))


def test_ten_official_models():
    # Hugging Face's names: the 270m base model alone has no "-pt" suffix.
    expected = {"gemma-3-270m", "gemma-3-270m-it"} | {
        f"gemma-3-{size}-{kind}" for size in SIZES[1:] for kind in ("pt", "it")
    }
    assert set(GEMMA3_MODELS) == expected
    assert all(get_family(s.family).name == "gemma3" for s in GEMMA3_MODELS.values())


@pytest.mark.parametrize("name", sorted(GEMMA3_MODELS))
def test_spec_equals_transformer_lens_but_for_the_attention_scale(name):
    from gemma_scope_ext.models import ModelSpec

    cfg = tl_config(name)
    spec = GEMMA3_MODELS[name]
    theirs = ModelSpec.from_tl_config(cfg, name=name, family="gemma3")
    assert theirs.attn_scale == math.sqrt(cfg.d_head)  # TL's Gemma 3 configs never set it
    assert spec == dataclasses.replace(theirs, attn_scale=spec.attn_scale)
    if "27b" in name:
        assert (spec.attn_scale**2, spec.d_head) == (pytest.approx(168), 128)
        assert spec.attn_scale != pytest.approx(theirs.attn_scale)
    else:
        assert spec.attn_scale == theirs.attn_scale == 16.0
    assert spec.hf_name == f"google/{name}"


def test_transformer_lens_rope_and_window_are_the_hf_configs():
    """What the real models' config.json files say (sliding_window; rope_theta 1e6 global and 1e4
    local; linear rope scaling factor 8 on global layers of 4b-27b only), as TL hard-codes it."""
    expected = {"270m": (512, 1.0), "1b": (512, 1.0), "4b": (1024, 8.0), "12b": (1024, 8.0),
                "27b": (1024, 8.0)}  # fmt: skip
    for size, (window, factor) in expected.items():
        cfg = tl_config(f"gemma-3-{size}-it")
        assert (cfg.window_size, cfg.rotary_scaling_factor) == (window, factor), size
        assert (cfg.rotary_base, cfg.rotary_base_local) == (1_000_000, 10_000), size
        # Five local layers to one global, ending wherever the depth ends.
        assert cfg.attn_types == (["local"] * 5 + ["global"]) * (cfg.n_layers // 6) + ["local"] * (
            cfg.n_layers % 6
        ), size
        assert cfg.use_qk_norm and cfg.original_architecture == (
            "Gemma3ForCausalLM" if size in ("270m", "1b") else "Gemma3ForConditionalGeneration"
        )


def test_hand_checked_sizes():
    small, big = GEMMA3_MODELS["gemma-3-270m"], GEMMA3_MODELS["gemma-3-27b-pt"]
    assert (small.d_model, small.n_layers, small.d_attn, small.d_vocab) == (640, 18, 1024, 262144)
    assert (big.d_model, big.n_layers, big.d_attn, big.d_vocab) == (5376, 62, 4096, 262208)
    assert site_d_in("gemma-3-4b-it", "att") == 2048
    assert site_d_in("gemma-3-12b-pt", "transcoder_skip") == 3840


@pytest.mark.parametrize("name", ["gemma-3-270m", "gemma-3-1b-pt", "gemma-3-27b-it"])
def test_every_hook_exists_for_every_layer(name):
    """Hook names depend only on the block structure: TL's own config of the same depth, shrunk,
    with the package's MLP-input hooks added, has every site's hook at every layer."""
    from transformer_lens import HookedTransformer

    cfg = dataclasses.replace(
        tl_config(name), d_model=16, d_head=4, n_heads=2, n_key_value_heads=1, d_mlp=32,
        d_vocab=64, n_ctx=32, window_size=4, tokenizer_name=None,
    )  # fmt: skip
    model = HookedTransformer(cfg, move_to_device=False)
    before = set(model.hook_dict)
    hooks = set(add_mlp_input_hooks(model).hook_dict)
    assert hooks - before == {f"blocks.{i}.mlp.hook_in" for i in range(cfg.n_layers)}
    for site in SITES:
        for layer in range(GEMMA3_MODELS[name].n_layers):
            assert hook_name(name, site, layer) in hooks
            assert hook_name_out(name, site, layer) in hooks


def test_both_hf_architectures_are_gemma3():
    assert family_of("Gemma3ForCausalLM").name == "gemma3"
    assert family_of("Gemma3ForConditionalGeneration").name == "gemma3"
    with pytest.raises(ValueError, match="Gemma2ForCausalLM, Gemma3ForCausalLM"):
        family_of("LlamaForCausalLM")


def _multimodal(text_config):
    from transformers import Gemma3Config

    tiny_vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                   "num_attention_heads": 2, "image_size": 28, "patch_size": 14}  # fmt: skip
    return Gemma3Config(text_config=text_config.to_dict(), vision_config=tiny_vision,
                        mm_tokens_per_image=4, image_token_index=5, boi_token_index=6,
                        eoi_token_index=7)  # fmt: skip


def test_multimodal_config_gives_the_text_models_tl_config(tiny_gemma3_hf_model):
    """4b-27b nest the language model's config; the TL config is read from inside it."""
    text = tiny_gemma3_hf_model.config
    ours = tl_config_from_hf(_multimodal(text))
    plain = tl_config_from_hf(text)
    assert ours.original_architecture == "Gemma3ForConditionalGeneration"
    assert plain.original_architecture == "Gemma3ForCausalLM"
    assert dataclasses.replace(ours, original_architecture=plain.original_architecture) == plain


def test_a_multimodal_model_converts_to_its_language_model(tiny_gemma3_hf_model):
    """A Gemma3ForConditionalGeneration holding the tiny model's weights: TL equals its logits on
    text, and the loaded model is a Gemma 3 with every transcoder hook."""
    from transformers import Gemma3ForConditionalGeneration

    from gemma_scope_ext.models import hooked_from_hf, sample_tokens

    config = _multimodal(tiny_gemma3_hf_model.config)
    config.text_config._attn_implementation = "eager"
    torch.manual_seed(0)
    mm = Gemma3ForConditionalGeneration(config).eval()
    mm.model.language_model.load_state_dict(tiny_gemma3_hf_model.model.state_dict())
    mm.lm_head.load_state_dict(tiny_gemma3_hf_model.lm_head.state_dict())
    model = hooked_from_hf(mm)
    tokens = sample_tokens(tiny_gemma3_model_tokenizer(), 2, 64)
    with torch.no_grad():
        ref = mm(input_ids=tokens).logits
        assert (model(tokens) - ref).abs().max() < 1e-4
        assert (tiny_gemma3_hf_model(tokens).logits - ref).abs().max() < 1e-4
    assert get_spec(model).family == "gemma3"
    assert model.cfg.original_architecture == "Gemma3ForConditionalGeneration"
    assert hook_name(model, "transcoder", 5) in model.hook_dict


def tiny_gemma3_model_tokenizer():
    from gemma_scope_ext.models import tiny_tokenizer

    return tiny_tokenizer("tiny-gemma3")


def test_spec_of_the_loaded_tiny_model(tiny_gemma3_model):
    spec = get_spec(tiny_gemma3_model)
    assert spec == dataclasses.replace(get_spec("tiny-gemma3"), name=spec.name)
    assert spec.family == "gemma3" and spec.attn_scale == pytest.approx(math.sqrt(32))
    assert hook_name(tiny_gemma3_model, "transcoder", 5) in tiny_gemma3_model.hook_dict
    with pytest.raises(ValueError, match=r"expected 0\.\.5"):
        hook_name(tiny_gemma3_model, "res", 6)
    with pytest.raises(ValueError, match="res, mlp, att, transcoder, transcoder_skip"):
        hook_name(tiny_gemma3_model, "embedding")


def test_rope_types_transformer_lens_cannot_convert_are_refused(tiny_gemma3_hf_model):
    cfg = tiny_gemma3_hf_model.config.to_dict()
    cfg["rope_parameters"] = {**cfg["rope_parameters"], "full_attention": {
        "rope_type": "yarn", "factor": 8.0, "rope_theta": 1e6}}  # fmt: skip
    from transformers import Gemma3TextConfig

    with pytest.raises(ValueError, match="rope_type 'yarn'"):
        tl_config_from_hf(Gemma3TextConfig(**cfg))


def test_every_model_gemma_scope_2_names_is_in_the_table():
    """SAELens's bundled list of Gemma Scope 2 releases names exactly the ten models of the table."""
    from pathlib import Path

    import sae_lens
    import yaml

    text = (Path(sae_lens.__file__).parent / "pretrained_saes.yaml").read_text()
    releases = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    models = {r["model"] for name, r in releases.items() if name.startswith("gemma-scope-2-")}
    assert {get_spec(m).name for m in models} == set(GEMMA3_MODELS)
    # Each release's repo holds SAEs on the base or instruction-tuned model it names.
    for name, r in releases.items():
        if name.startswith("gemma-scope-2-"):
            size, kind = r["repo_id"].removeprefix("google/gemma-scope-2-").split("-")
            assert get_spec(r["model"]).name in (f"gemma-3-{size}-{kind}", f"gemma-3-{size}"), name
