"""Loading Gemma 3: the embedded tiny model, TransformerBridge's names, and the offline error."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gemma_scope_ext import hook_name, hook_name_out, load_gemma3, load_model, sample_tokens
from gemma_scope_ext.models import tiny_dir, tiny_gemma3_hf, tiny_spec
from gemma_scope_ext.models.gemma3 import SITES

TINY = "tiny-gemma3"


def test_tiny_model_is_small_and_trained(tiny_gemma3_model):
    assert (tiny_dir(TINY) / "model.safetensors").stat().st_size < 5_000_000
    assert tiny_gemma3_model.cfg.n_layers == tiny_spec(TINY).n_layers == 6
    # Trained, not random: held-out loss far below the uniform log(vocab).
    tokens = sample_tokens(tiny_gemma3_model.tokenizer, 4, 64, split="eval")
    with torch.no_grad():
        loss = tiny_gemma3_model(tokens, return_type="loss").item()
    assert loss < 0.65 * math.log(tiny_gemma3_model.cfg.d_vocab)
    meta = json.loads((tiny_dir(TINY) / "training.json").read_text())
    assert meta["eval_loss"] < 4.0


def test_both_tiny_models_share_the_tokenizer(tiny_gemma3_model, tiny_model):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tiny_dir(TINY) / name).read_bytes() == (tiny_dir("tiny-gemma2") / name).read_bytes()
    text = "Return the number of items in the list."
    assert tiny_gemma3_model.to_tokens(text).tolist() == tiny_model.to_tokens(text).tolist()


def test_tiny_config_exercises_the_gemma3_details():
    hf = tiny_gemma3_hf()
    c = hf.config
    assert c.architectures == ["Gemma3ForCausalLM"]
    assert c.num_key_value_heads < c.num_attention_heads  # GQA
    assert c.query_pre_attn_scalar != c.head_dim
    assert c.sliding_window < 64 and c.layer_types[2] == "full_attention"
    assert c.rope_parameters["full_attention"]["rope_type"] == "linear"
    assert c.attn_logit_softcapping is None and c.final_logit_softcapping is None
    norms = [w for n, w in hf.named_parameters() if n.endswith("norm.weight")]
    assert len(norms) == 6 * 6 + 1  # four block norms, q_norm and k_norm per layer; final norm
    assert all(w.abs().mean() > 0.01 for w in norms)  # the (1 + w) convention matters


def test_the_tiny_gemma3_bridge_equals_hooked_transformer(tiny_gemma3_model):
    """``tiny_gemma3(as_bridge=True)``: every site's hook (mlp.hook_in natively), same values, and a
    transcoder spliced at mlp.hook_in gives the same logits on both kinds."""
    from gemma_scope_ext import splice, tiny_gemma3
    from tests.helpers.random_saes import random_jumprelu

    bridge = tiny_gemma3(as_bridge=True)
    assert type(bridge).__name__ == "TransformerBridge"
    tokens = sample_tokens(tiny_gemma3_model.tokenizer, 2, 64, split="eval")
    with torch.no_grad():
        _, theirs = bridge.run_with_cache(tokens)
        _, ours = tiny_gemma3_model.run_with_cache(tokens)
    for site in SITES:
        for layer in range(tiny_gemma3_model.cfg.n_layers):
            names = {hook_name(bridge, site, layer), hook_name_out(bridge, site, layer)}
            assert names == {hook_name(tiny_gemma3_model, site, layer),
                             hook_name_out(tiny_gemma3_model, site, layer)}  # fmt: skip
            for name in names:
                assert (theirs[name] - ours[name]).abs().max() < 1e-4, name
    tc = random_jumprelu(ours, "blocks.2.mlp.hook_in", hook_out="blocks.2.hook_mlp_out")
    with torch.no_grad():
        plain = tiny_gemma3_model(tokens)
        with splice(tiny_gemma3_model, [tc], use_error_term=False):
            want = tiny_gemma3_model(tokens)
        with splice(bridge, [tc], use_error_term=False):
            got = bridge(tokens)
    assert (got - want).abs().max() < 1e-4
    assert (want - plain).abs().max() > 1e-2  # control: the transcoder changes the output


def test_load_gemma3_offline_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="google/gemma-3-1b-pt.*tiny-gemma3"):
        load_gemma3("gemma-3-1b-pt", device="cpu", first_n_layers=1)
    with pytest.raises(ValueError, match="gemma2 model, not Gemma 3"):
        load_gemma3("tiny-gemma2")
    model = load_model(TINY)
    assert "blocks.0.mlp.hook_in" in model.hook_dict
    assert model.cfg.attn_scale == pytest.approx(math.sqrt(32))


def test_the_loader_corrects_the_27b_attention_scale(monkeypatch):
    """load_gemma3 on a released name: TransformerLens's model (here its own 27b config, shrunk,
    in place of the download) gets sqrt(168) in every block and the MLP-input hooks."""
    import dataclasses

    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import convert_hf_model_config

    asked = []

    def from_pretrained_no_processing(name, **kwargs):
        asked.append(name)
        cfg = HookedTransformerConfig(**convert_hf_model_config(name))
        small = dataclasses.replace(cfg, d_model=32, d_head=8, n_heads=4, n_key_value_heads=2,
                                    d_mlp=64, d_vocab=64, n_ctx=32, n_layers=6, window_size=4,
                                    attn_types=cfg.attn_types[:6], tokenizer_name=None)  # fmt: skip
        return HookedTransformer(small, move_to_device=False)

    monkeypatch.setattr(HookedTransformer, "from_pretrained_no_processing",
                        staticmethod(from_pretrained_no_processing))  # fmt: skip
    model = load_gemma3("gemma-3-27b-pt", device="cpu")
    assert asked == ["google/gemma-3-27b-pt"]
    assert model.cfg.attn_scale == pytest.approx(math.sqrt(168))
    assert [b.attn.attn_scale for b in model.blocks] == [pytest.approx(math.sqrt(168))] * 6
    assert hook_name(model, "transcoder", 5) in model.hook_dict
