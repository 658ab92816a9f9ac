"""Suites at Gemma 2 2B scale on a GPU: one 8-entry suite against the same entries one at a time.

    python -m benchmarks.gemma_scale_suite --device cuda [--tokens 1048576] [--d-sae 16384]
    python -m benchmarks.gemma_scale_suite --smoke      # the same code path, tiny model, CPU

No weights can be downloaded where this runs, so the model is Gemma 2 2B's architecture with random
weights (as ``gemma_scale_graph``) and the tokens random ids; the time depends on the shapes only.
Entries: res and mlp SAEs at layer 12 (16k latents, 4 L0 coefficients each: 8 entries), batch 4096
tokens, rows of 1024. It prints, and a GPU run must report:

- ``forward``: seconds per batch of the model stopped after block 12, and ``sae step``: seconds per
  training step of one entry (the ratio is the headroom a suite can win: Gemma Scope's ~10x);
- ``suite``: SAE-tokens/s of the 8-entry suite, ``single``: of one entry alone, and their ratio
  ``speed-up`` (the suite against 8 separate runs; the bound is (forward + step) / (forward/8 + step));
- ``peak memory`` of the suite (GB).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from gemma_scope_ext.activations import LiveSource
from gemma_scope_ext.training import SuiteConfig, SuiteTrainingRunner, suite_entries


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tokens", type=int, default=1 << 20, help="training tokens per entry")
    p.add_argument("--d-sae", type=int, default=16384)
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU, a few steps")
    args = p.parse_args()
    if args.smoke:
        from gemma_scope_ext.models.loading import tiny_gemma2

        model, name, device, layer, ctx, rows, batch = tiny_gemma2(), "tiny-gemma2", "cpu", 2, 64, 8, 256
        args.tokens, args.d_sae = 4 * batch, 256
    else:
        from benchmarks.gemma_scale_graph import _model

        model, name, device, layer, ctx, rows, batch = _model(args.device, False), "gemma-2-2b", args.device, 12, 1024, 4, 4096
    vocab = model.cfg.d_vocab
    entries = suite_entries(name, sites=["res", "mlp"], layers=[layer], d_sae=args.d_sae,
                            l0_coefficients=[1e-4, 3e-4, 1e-3, 3e-3])  # fmt: skip
    n_rows = 2 * args.tokens // ctx + 2 * rows
    tokens = torch.randint(3, vocab, (n_rows, ctx))

    def run(chosen) -> float:
        cfg = SuiteConfig(model_name=name, entries=chosen, training_tokens=args.tokens,
                          train_batch_size_tokens=batch, context_size=ctx, store_batch_size_prompts=rows,
                          device=device, output_path=tempfile.mkdtemp(prefix="gs_suite_"))  # fmt: skip
        source = LiveSource(model, tokens, cfg.hooks(), rows)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        SuiteTrainingRunner(cfg, source=source, progress=False).run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run(entries[:1])  # warm-up
    single = run(entries[:1])
    suite = run(entries)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else float("nan")
    hooks = [f"blocks.{layer}.hook_resid_post", f"blocks.{layer}.hook_mlp_out"]
    src = LiveSource(model, tokens, hooks, rows)
    start = time.perf_counter()
    for _ in range(4):
        src.next_chunk()
    forward = (time.perf_counter() - start) / 4 * batch / (rows * ctx)
    n = args.tokens
    print(f"model {name}, d_sae {args.d_sae}, batch {batch}, {n:,} tokens per entry, device {device}")
    print(f"forward {forward:.4f} s/batch; sae step ~{max(single / (n / batch) - forward, 0):.4f} s/batch")
    print(f"suite {8 * n / suite:,.0f} SAE-tokens/s; single {n / single:,.0f}; "
          f"speed-up {8 * single / suite:.2f}x; peak memory {peak:.1f} GB")


if __name__ == "__main__":
    main()
