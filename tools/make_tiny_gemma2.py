"""Build the embedded tiny Gemma 2: corpus, tokenizer, and a briefly trained model.

Writes into ``gemma_scope_ext/models/data/``:
  docstrings.jsonl.gz   the corpus: docstrings of this Python's standard library (PSF licence),
                        read with ``ast`` (nothing is imported), split into train and eval.
  tiny_gemma2/          a Hugging Face ``Gemma2ForCausalLM`` (config.json, model.safetensors) and
                        a Gemma-style tokenizer (pad 0, eos 1, bos 2, unk 3, byte fallback).

Run ``make tiny-model`` (about ten minutes on two CPU cores). The result is committed, so users never
run this; it is here so the shipped weights can be rebuilt and audited.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import inspect
import json
import math
import random
import sysconfig
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[1] / "gemma_scope_ext" / "models" / "data"
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "ensurepip", "turtledemo"}


def collect_docstrings(max_chars: int) -> list[str]:
    """Docstrings of the standard library, in a fixed order, deduplicated."""
    root = Path(sysconfig.get_paths()["stdlib"])
    seen, docs = set(), []
    for path in sorted(root.rglob("*.py")):
        if SKIP_DIRS & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node, clean=False)
                doc = inspect.cleandoc(doc) if doc else ""
                if len(doc) >= 80 and doc not in seen:  # dedupe after cleaning: no split leaks
                    seen.add(doc)
                    docs.append(doc)
    random.Random(0).shuffle(docs)
    kept, total = [], 0
    for doc in docs:
        if total >= max_chars:
            break
        kept.append(doc)
        total += len(doc)
    return kept


def build_tokenizer(texts: list[str], vocab_size: int):
    """A SentencePiece-style BPE in Gemma's id layout: specials 0-3, bytes <0x00>..<0xFF> 4-259."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    def fresh(model):
        tok = Tokenizer(model)
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
        tok.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        )
        return tok

    n_learned = vocab_size - len(SPECIALS) - 256
    draft = fresh(models.BPE(unk_token="<unk>"))
    trainer = trainers.BpeTrainer(
        vocab_size=n_learned, special_tokens=[], limit_alphabet=160, show_progress=False
    )
    draft.train_from_iterator(texts, trainer)
    learned = json.loads(draft.to_str())["model"]
    vocab = {t: i for i, t in enumerate(SPECIALS + [f"<0x{b:02X}>" for b in range(256)])}
    for token, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tok = fresh(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tok.add_special_tokens(SPECIALS)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)]
    )

    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        add_bos_token=True,
        padding_side="right",
        model_max_length=1024,
    )


def tiny_config(vocab_size: int):
    from transformers import Gemma2Config

    return Gemma2Config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as in every Gemma 2
        head_dim=24,  # n_heads * d_head = 96 != d_model, as in the real models
        query_pre_attn_scalar=32,  # != head_dim, so the attention scale is exercised
        sliding_window=16,  # shorter than the test sequences
        max_position_embeddings=1024,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        hidden_activation="gelu_pytorch_tanh",
        rms_norm_eps=1e-6,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )


def token_stream(tokenizer, texts: list[str], seq_len: int) -> torch.Tensor:
    """Documents packed into rows of ``seq_len`` tokens, each row starting with BOS."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"] + [1])  # eos between
    body = seq_len - 1
    n = len(ids) // body
    rows = torch.tensor(ids[: n * body]).view(n, body)
    return torch.cat([torch.full((n, 1), 2), rows], dim=1)


def train(model, rows: torch.Tensor, steps: int, batch: int, lr: float, seed: int) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warmup)
        * 0.5
        * (1 + math.cos(math.pi * min(1.0, s / steps))),
    )
    model.train()
    losses, start = [], time.time()
    for step in range(steps):
        idx = torch.randint(0, rows.shape[0], (batch,), generator=gen)
        x = rows[idx]
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.time() - start:6.0f}s", flush=True)
    model.eval()
    return losses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--max-chars", type=int, default=2_500_000)
    args = p.parse_args()
    torch.manual_seed(0)

    docs = collect_docstrings(args.max_chars)
    n_eval = len(docs) // 20
    splits = {"eval": docs[:n_eval], "train": docs[n_eval:]}
    DATA.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"split": s, "text": t}) for s, texts in splits.items() for t in texts]
    payload = ("\n".join(lines) + "\n").encode("utf-8")
    (DATA / "docstrings.jsonl.gz").write_bytes(gzip.compress(payload, mtime=0))
    print(f"corpus: {len(splits['train'])} train / {n_eval} eval docstrings")

    tokenizer = build_tokenizer(splits["train"], args.vocab)
    from transformers import Gemma2ForCausalLM

    model = Gemma2ForCausalLM(tiny_config(len(tokenizer)))
    with torch.no_grad():  # non-zero RMSNorm weights, so the (1 + w) convention matters
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(0.0, 0.1)
    rows = token_stream(tokenizer, splits["train"], args.seq_len)
    eval_rows = token_stream(tokenizer, splits["eval"], args.seq_len)
    print(f"tokens: {rows.numel()} train, {eval_rows.numel()} eval; params {model.num_parameters()}")
    train(model, rows, args.steps, args.batch, args.lr, seed=0)
    with torch.no_grad():
        eval_loss = model(input_ids=eval_rows[:64], labels=eval_rows[:64]).loss.item()
    print(f"eval loss {eval_loss:.3f} (uniform would be {math.log(len(tokenizer)):.3f})")

    out = DATA / "tiny_gemma2"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "generation_config.json").unlink(missing_ok=True)
    meta = {"steps": args.steps, "batch": args.batch, "seq_len": args.seq_len, "lr": args.lr,
            "eval_loss": round(eval_loss, 4), "train_tokens_seen": args.steps * args.batch * args.seq_len}
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
