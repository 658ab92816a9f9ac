"""Evaluation throughput against a clean forward pass of the same model, in the same process.

    python -m benchmarks.bench_eval [--n-seqs 32 --seq-len 128 --threads 1]

Prints a markdown table: tokens per second of a clean forward, of ``evaluate`` with and without the
ablation losses, of ``evaluate_many`` over four SAEs at one site, and of SAELens's ``run_evals`` on
the same tokens; the overhead column is the time relative to the clean forward. The SAEs project onto the top-k principal directions of the
site (latents +-u_i, threshold 0), so their FVU is known; ``--save-saes DIR`` writes them for
``gemma-scope eval``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from gemma_scope_ext.evals.metrics import evaluate, evaluate_many
from gemma_scope_ext.models.loading import load_gemma2
from gemma_scope_ext.models.text import sample_tokens

KS = (4, 16, 32, 64)


def pca_saes(model, tokens: torch.Tensor, hook: str, ks=KS) -> dict[str, object]:
    """SAEs whose latents are +-u_i for the top-k principal directions of ``hook``."""
    from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.util import get_special_token_ids

    special = torch.tensor(get_special_token_ids(model.tokenizer))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[hook])
    x = cache[hook].flatten(2) if cache[hook].ndim == 4 else cache[hook]
    x = x[~torch.isin(tokens, special)].double()
    mu = x.mean(0)
    evals, evecs = torch.linalg.eigh((x - mu).T @ (x - mu) / len(x))
    evecs = evecs[:, evals.argsort(descending=True)].float()
    saes = {}
    for k in ks:
        cfg = JumpReLUSAEConfig(d_in=x.shape[-1], d_sae=2 * k,
                                metadata=SAEMetadata(hook_name=hook))
        sae = JumpReLUSAE(cfg)
        with torch.no_grad():
            sae.W_enc.copy_(torch.cat([evecs[:, :k], -evecs[:, :k]], dim=1))
            sae.W_dec.copy_(sae.W_enc.T)
            sae.b_dec.copy_(mu.float())
            sae.b_enc.zero_()
            sae.threshold.zero_()
        saes[f"pca_k{k}"] = sae
    return saes


class _Batches:
    """The part of SAELens's ActivationsStore that ``run_evals`` uses: fixed batches in turn."""

    def __init__(self, tokens: torch.Tensor, batch_size: int) -> None:
        self.tokens, self.batch_size, self.i = tokens, batch_size, 0
        self.context_size, self.store_batch_size_prompts = tokens.shape[1], batch_size

    def get_batch_tokens(self, n: int) -> torch.Tensor:
        batch = self.tokens[self.i : self.i + n]
        self.i = (self.i + n) % len(self.tokens)
        return batch

    def reset_input_dataset(self) -> None:
        self.i = 0


def saelens_run_evals(model, sae, tokens: torch.Tensor, batch_size: int) -> dict:
    """SAELens's own evaluation of the same metrics (CE with SAE and zero ablation, L0, FVU)."""
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.training.activation_scaler import ActivationScaler

    n = len(tokens) // batch_size
    cfg = EvalConfig(batch_size_prompts=batch_size, n_eval_reconstruction_batches=n,
                     compute_ce_loss=True, n_eval_sparsity_variance_batches=n,
                     compute_sparsity_metrics=True, compute_variance_metrics=True)
    return run_evals(sae, _Batches(tokens, batch_size), model, ActivationScaler(), cfg)[0]


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` runs, in seconds (the CPU is shared: the minimum is the signal)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-gemma2")
    p.add_argument("--hook", default="blocks.2.hook_resid_post")
    p.add_argument("--n-seqs", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--save-saes", type=Path, default=None, help="also save the SAEs here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_gemma2(args.model)
    tokens = sample_tokens(model.tokenizer, args.n_seqs, args.seq_len)
    saes = pca_saes(model, sample_tokens(model.tokenizer, 64, args.seq_len, "train"), args.hook)
    if args.save_saes is not None:
        for name, sae in saes.items():
            sae.save_model(str(args.save_saes / name))
    sae = saes["pca_k32"]
    n_tokens = tokens.numel()

    def clean():
        with torch.no_grad():
            for batch in tokens.split(args.batch_size):
                model(batch, return_type="logits")

    runs = {
        "clean forward (logits)": clean,
        "evaluate, no ablations": lambda: evaluate(model, sae, tokens, batch_size=args.batch_size,
                                                    ablations=False, progress=False),
        "evaluate, with zero/mean ablations": lambda: evaluate(
            model, sae, tokens, batch_size=args.batch_size, progress=False),
        f"evaluate_many, {len(saes)} SAEs, no ablations": lambda: evaluate_many(
            model, list(saes.values()), tokens, batch_size=args.batch_size, ablations=False,
            progress=False),
        "SAELens run_evals (CE + zero ablation, L0, FVU)": lambda: saelens_run_evals(
            model, sae, tokens, args.batch_size),
    }
    clean()  # warm-up
    seconds = {name: best_of(fn, args.repeats) for name, fn in runs.items()}
    base = seconds["clean forward (logits)"]
    print(f"{args.model}, {args.hook}, {args.n_seqs} x {args.seq_len} tokens, batch "
          f"{args.batch_size}, {torch.get_num_threads()} CPU thread(s), best of {args.repeats}\n")
    print("| run | seconds | tokens/s | x clean forward |")
    print("|---|---:|---:|---:|")
    for name, s in seconds.items():
        print(f"| {name} | {s:.3f} | {n_tokens / s:,.0f} | {s / base:.2f} |")


if __name__ == "__main__":
    main()
