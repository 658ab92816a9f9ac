"""Test helper: a tiny random Gemma 3 in Hugging Face and TransformerLens, equal to each other.

A random ``Gemma3ForCausalLM`` at gemma-3-270m's widths (d_model 640, 4 heads x 256, one KV head:
the Gemma Scope 2 catalog's shapes for that model) but 3 layers, a 512-token vocabulary and a
4-token window (sliding, global, sliding; rope bases 1e4 and 1e6; qk-norm; random non-zero norm
weights), converted with TransformerLens's ``convert_gemma_weights`` into SAELens's
``HookedSAETransformer`` (which adds ``mlp.hook_in``); TransformerLens's config is gemma-3-270m's
with the sizes replaced, since it reads no sizes from a Hugging Face config.
"""

from __future__ import annotations

import sae_lens
import torch


def tiny_gemma3(seed: int = 0):
    """(HF model, TL model, tokens [2, 12]), both in eval mode, fp32, on the CPU."""
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import convert_hf_model_config
    from transformer_lens.pretrained.weight_conversions.gemma import convert_gemma_weights
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    rope = {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}  # fmt: skip
    hf_cfg = Gemma3TextConfig(
        vocab_size=512, hidden_size=640, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
        sliding_window=4, max_position_embeddings=64, rope_parameters=rope,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    )  # fmt: skip
    hf = Gemma3ForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:  # exercise Gemma's (1 + w) convention
                p.normal_(0, 0.3)
    c = convert_hf_model_config("google/gemma-3-270m")
    c.update(d_mlp=128, n_layers=3, n_ctx=64, d_vocab=512, window_size=4,
             attn_types=["local", "global", "local"], rotary_base=1e6, rotary_base_local=1e4,
             attn_scale=16.0, tokenizer_name=None, model_name="tiny-gemma3", dtype=torch.float32,
             device="cpu")  # fmt: skip
    cfg = HookedTransformerConfig(**c)
    tl = sae_lens.HookedSAETransformer(cfg)
    tl.load_state_dict(convert_gemma_weights(hf, cfg), strict=False)
    tokens = torch.randint(3, 512, (2, 12), generator=torch.Generator().manual_seed(1))
    return hf, tl.eval(), tokens
