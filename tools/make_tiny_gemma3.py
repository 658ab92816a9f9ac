"""Build the embedded tiny Gemma 3: a briefly trained ``Gemma3ForCausalLM`` on the built-in text.

Writes ``gemma_scope_ext/models/data/tiny_gemma3/`` (config.json, model.safetensors, the tiny Gemma 2's
tokenizer files, training.json). The corpus and tokenizer are the tiny Gemma 2's (``make tiny-model``
builds them), so both tiny models read the same token ids and the same held-out text.

The architecture is Gemma 3's at toy size, with every detail that TransformerLens has to get right
present and distinguishable: local and global layers (a global layer in the middle, not only the
last), a sliding window shorter than the test sequences, qk-norm, separate rope bases for local and
global layers, linear rope scaling on the global layers (as 4b-27b have), grouped-query attention,
query_pre_attn_scalar != head_dim, and random non-zero RMSNorm weights (Gemma's ``1 + w``).

Run ``make tiny-model-gemma3`` (about twenty minutes on one CPU core). The result is committed.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil

import torch
from make_tiny_gemma2 import DATA, token_stream, train

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def tiny_config(vocab_size: int):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as in 4b-27b
        head_dim=24,  # n_heads * d_head = 96 != d_model, as in the real models
        query_pre_attn_scalar=32,  # != head_dim, so the attention scale is exercised
        sliding_window=16,  # shorter than the test sequences
        layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
        },
        max_position_embeddings=1024,
        hidden_activation="gelu_pytorch_tanh",
        rms_norm_eps=1e-6,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    args = p.parse_args()
    torch.manual_seed(0)

    from transformers import AutoTokenizer, Gemma3ForCausalLM

    from gemma_scope_ext.models.text import sample_texts

    source = DATA / "tiny_gemma2"
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = Gemma3ForCausalLM(tiny_config(len(tokenizer)))
    with torch.no_grad():  # non-zero RMSNorm weights (q/k norms too), so (1 + w) matters
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(0.0, 0.1)
    rows = token_stream(tokenizer, sample_texts("train"), args.seq_len)
    eval_rows = token_stream(tokenizer, sample_texts("eval"), args.seq_len)
    print(f"tokens: {rows.numel()} train, {eval_rows.numel()} eval; params {model.num_parameters()}")
    train(model, rows, args.steps, args.batch, args.lr, seed=0)
    with torch.no_grad():
        eval_loss = model(input_ids=eval_rows[:64], labels=eval_rows[:64]).loss.item()
    print(f"eval loss {eval_loss:.3f} (uniform would be {math.log(len(tokenizer)):.3f})")

    out = DATA / "tiny_gemma3"
    model.save_pretrained(out)
    (out / "generation_config.json").unlink(missing_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, out / name)
    meta = {"steps": args.steps, "batch": args.batch, "seq_len": args.seq_len, "lr": args.lr,
            "eval_loss": round(eval_loss, 4), "train_tokens_seen": args.steps * args.batch * args.seq_len}
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
