"""Loading Gemma 2: the embedded tiny model, the TransformerBridge names, and the offline error."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from gemma_scope_ext import (
    SITES,
    hook_name,
    hook_name_out,
    load_gemma2,
    sample_texts,
    sample_tokens,
)
from gemma_scope_ext.models import tiny_dir, tiny_gemma2, tiny_gemma2_hf, tiny_spec


def test_tiny_model_is_small_and_trained():
    weights = tiny_dir() / "model.safetensors"
    assert weights.stat().st_size < 5_000_000
    model = tiny_gemma2()
    assert model.cfg.n_layers == tiny_spec().n_layers == 4
    # Trained, not random: held-out loss far below the uniform log(vocab).
    tokens = sample_tokens(model.tokenizer, 4, 64, split="eval")
    with torch.no_grad():
        loss = model(tokens, return_type="loss").item()
    assert loss < 0.6 * torch.log(torch.tensor(float(model.cfg.d_vocab))).item()
    meta = json.loads((tiny_dir() / "training.json").read_text())
    assert meta["eval_loss"] < 4.0


def test_tiny_config_exercises_the_gemma2_details():
    c = tiny_gemma2_hf().config
    assert c.num_key_value_heads < c.num_attention_heads  # GQA
    assert c.query_pre_attn_scalar != c.head_dim
    assert c.num_attention_heads * c.head_dim != c.hidden_size
    assert c.sliding_window < 64 and set(c.layer_types) == {"sliding_attention", "full_attention"}
    assert c.attn_logit_softcapping == 50.0 and c.final_logit_softcapping == 30.0
    norms = [w for n, w in tiny_gemma2_hf().named_parameters() if n.endswith("norm.weight")]
    assert all(w.abs().mean() > 0.01 for w in norms)  # the (1 + w) convention matters


def test_tokenizer_is_gemma_style(tiny_model):
    tok = tiny_model.tokenizer
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    text = "naïve café ☃ 東京"  # characters outside the learned vocabulary fall back to bytes
    ids = tok(text)["input_ids"]
    assert ids[0] == 2 and 3 not in ids
    assert tok.decode(ids[1:]) == text
    assert tiny_model.to_tokens("hello")[0, 0].item() == 2  # TransformerLens prepends BOS


def test_transformer_bridge_exposes_the_same_hooks(tiny_model, eval_tokens):
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(
        str(tiny_dir()), hf_model=tiny_gemma2_hf(), tokenizer=tiny_model.tokenizer
    )
    tokens = eval_tokens[:2]
    with torch.no_grad():
        _, theirs = bridge.run_with_cache(tokens)
        _, ours = tiny_model.run_with_cache(tokens)
    for site, s in SITES.items():
        for layer in range(tiny_model.cfg.n_layers) if s.per_layer else [None]:
            for name in {hook_name(tiny_model, site, layer), hook_name_out(tiny_model, site, layer)}:
                assert (theirs[name] - ours[name]).abs().max() < 1e-4, name


def test_load_gemma2_offline_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="google/gemma-2-2b.*tiny-gemma2"):
        load_gemma2("gemma-2-2b", device="cpu", first_n_layers=1)
    with pytest.raises(ValueError, match="unknown model"):
        load_gemma2("gemma-3-1b")
    assert load_gemma2("tiny-gemma2").cfg.d_model == tiny_spec().d_model
    with pytest.raises(RuntimeError, match="google/gemma-2-2b.*tiny-gemma2"):
        load_gemma2("gemma-2-2b", device="cpu", first_n_layers=1, as_bridge=True)


def test_as_bridge_gives_a_raw_transformer_bridge(tiny_model, eval_tokens):
    from transformer_lens.model_bridge import TransformerBridge

    from gemma_scope_ext.models.backend import is_bridge

    bridge = load_gemma2("tiny-gemma2", as_bridge=True)
    assert type(bridge) is TransformerBridge and is_bridge(bridge) and not is_bridge(tiny_model)
    assert not bridge.compatibility_mode
    assert bridge.cfg.d_model == tiny_spec().d_model
    with torch.no_grad():
        diff = (bridge(eval_tokens[:2]) - tiny_model(eval_tokens[:2])).abs().max()
    assert diff < 1e-4  # measured 1.1e-5
    # Why not compatibility mode: it folds the norm gains into the next weights, which moves the
    # unembedding input the attribution graph reads (measured 3.2) and the MLP input (1.0).
    folded = tiny_gemma2(as_bridge=True)
    folded.enable_compatibility_mode(disable_warnings=True)
    names = ["unembed.hook_in", "blocks.1.mlp.hook_in"]
    with torch.no_grad():
        _, raw = bridge.run_with_cache(eval_tokens[:1], names_filter=names)
        _, moved = folded.run_with_cache(eval_tokens[:1], names_filter=names)
        _, ours = tiny_model.run_with_cache(eval_tokens[:1], names_filter=names[:1])
    assert (raw[names[0]] - ours[names[0]]).abs().max() < 1e-4
    for name in names:
        assert (raw[name] - moved[name]).abs().max() > 0.1, name


def test_sample_text_splits():
    train, held_out = sample_texts("train"), sample_texts("eval")
    assert len(train) > 10 * len(held_out) > 0
    assert not set(train) & set(held_out)
    assert sample_texts("eval", 3) == held_out[:3]
    with pytest.raises(ValueError, match="unknown split 'test' of the built-in text; expected "
                                         "one of: train, eval"):
        sample_texts("test")
    with pytest.raises(ValueError, match="unknown split 'bogus'"):
        sample_tokens(None, 1, 4, split="bogus")  # before the tokenizer is touched


def test_sample_tokens_pack_documents(tiny_model):
    tok = tiny_model.tokenizer
    rows = sample_tokens(tok, 3, 20)
    assert rows.shape == (3, 20) and (rows[:, 0] == tok.bos_token_id).all()
    first = tok(sample_texts("eval", 1)[0], add_special_tokens=False)["input_ids"]
    assert rows[0, 1:].tolist() == first[:19]
    with pytest.raises(ValueError, match="fewer than"):
        sample_tokens(tok, 10**6, 64)


def test_cli_help_does_not_import_torch():
    code = (
        "import sys, gemma_scope_cli\n"
        "try:\n    gemma_scope_cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "demo" in out.stdout
