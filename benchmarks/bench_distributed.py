"""A suite on 2 gloo ranks (data parallel and distributed entries) against 1 process, and what
each mode sends per step, measured and on paper (the tiny model here, Gemma 2 2B on 8 GPUs).

    python -m benchmarks.bench_distributed [--tokens 32768] [--d-sae 512] [--ranks 2]
    torchrun --nproc_per_node 8 -m benchmarks.bench_distributed --worker --device cuda \\
        --model gemma-2-2b --layers 26 --ladder 1 --d-sae 16384 --tokens 409600 --mode entries

The second line is the GPU run (also with ``--mode data_parallel``, and with ``--nproc_per_node 1``
for the baseline). Rank 0 prints one JSON line a GPU run must report: ``seconds``, ``steps``,
``bytes_per_step`` (to set against ``paper_bytes``), ``tokens_per_s`` (per entry) and ``peak_gb``.

Entries: res SAEs on ``--layers`` layers at two L0 coefficients, one suite, batch 1024 (4096 for
Gemma). SAELens has no multi-process training, so the reference is the same suite in one process.
Each path runs under ``torch.distributed.run`` (the 1-process one too, with as many threads as
the ranks have in all); the time is ``SuiteTrainingRunner.run()`` on rank 0, model load excluded.
Bytes are what ``Comm`` counted on rank 0, per step, next to the formula below for the same
shapes (ring all-reduce sends 2(W-1)/W of the tensor per rank; the all-to-all sends each other rank
its own rows of the hooks that rank's entries read).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("data_parallel", "entries")
D_TINY = 128  # tiny-gemma2 d_model


def sae_params(d_in: int, d_sae: int) -> int:
    """Trainable parameters of a JumpReLU SAE: W_enc, W_dec, b_enc, threshold, b_dec."""
    return 2 * d_in * d_sae + 2 * d_sae + d_in


def paper_bytes(mode: str, d_in: int, d_sae: int, entries_per_hook: int, hooks: int,
                batch: int, world: int) -> float:  # fmt: skip
    """Bytes one rank sends per step (fp32), for ``hooks`` hooks of width ``d_in`` with
    ``entries_per_hook`` SAEs each, entries shared out by hook (groups) as ``assign_entries`` does."""
    if mode == "data_parallel":
        per_entry = sae_params(d_in, d_sae) + 2 * d_sae  # gradients, then firing counts
        return 2 * (world - 1) / world * 4 * per_entry * entries_per_hook * hooks
    own = hooks // world  # the fewest hooks a rank owns: it sends the most
    return batch / world * (hooks - own) * d_in * 4


def worker(args: argparse.Namespace) -> None:
    import torch

    from gemma_scope_ext.training import SuiteConfig, SuiteTrainingRunner, suite_entries

    torch.set_num_threads(args.threads)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local}" if args.device == "cuda" else args.device
    if args.model == "tiny-gemma2":
        from gemma_scope_ext.models.loading import tiny_gemma2

        model, ctx, rows, batch = tiny_gemma2(device=device), 128, 8, 1024
    else:  # Gemma 2 2B's shapes, random weights (seeded: the same on every rank): no download
        from benchmarks.gemma_scale_graph import _model

        model, ctx, rows, batch = _model(device, False), 1024, 4, 4096
    dataset = "docstrings:train"
    if args.random_tokens or args.model != "tiny-gemma2":
        dataset = str(Path(args.out) / "tokens.pt")  # every rank writes the same rows
        g = torch.Generator().manual_seed(0)
        mine = f"{dataset}.{os.environ.get('RANK', '0')}"
        torch.save(torch.randint(3, model.cfg.d_vocab, (2 * args.tokens // ctx + 64, ctx), generator=g),
                   mine)  # fmt: skip
        os.replace(mine, dataset)
    entries = suite_entries(args.model, sites=["res"], layers=range(args.layers), d_sae=args.d_sae,
                            l0_coefficients=[1e-3, 1e-2][: args.ladder], l0_warm_up_steps=10)  # fmt: skip
    cfg = SuiteConfig(model_name=args.model, entries=entries, training_tokens=args.tokens,
                      output_path=str(Path(args.out) / "suite"), dataset=dataset, context_size=ctx,
                      store_batch_size_prompts=rows, train_batch_size_tokens=batch,
                      n_batches_in_buffer=4, lr_warm_up_steps=10, distributed=args.mode,
                      data_streams=args.streams, device=args.device,
                      exclude_special_tokens=dataset.startswith("docstrings"))  # fmt: skip
    runner = SuiteTrainingRunner(cfg, model=model, progress=False)
    t0 = time.perf_counter()
    runner.run()
    seconds = time.perf_counter() - t0
    steps = args.tokens // batch
    sent = runner.comm.bytes_sent if runner.comm is not None else 0
    if os.environ.get("RANK", "0") == "0":
        peak = torch.cuda.max_memory_allocated() / 1e9 if args.device.startswith("cuda") else 0.0
        print(json.dumps({"seconds": seconds, "steps": steps, "bytes_per_step": sent / steps,
                          "tokens_per_s": args.tokens / seconds, "peak_gb": peak}))  # fmt: skip


def launch(args: argparse.Namespace, ranks: int, mode: str, threads: int, out: str) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(ranks), "-m", "benchmarks.bench_distributed", "--worker", "--mode", mode,
           "--threads", str(threads), "--tokens", str(args.tokens), "--d-sae", str(args.d_sae),
           "--layers", str(args.layers), "--streams", str(args.ranks), "--out", out,
           "--ladder", str(args.ladder)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=32_768, help="training tokens per entry")
    p.add_argument("--d-sae", type=int, default=512)
    p.add_argument("--layers", type=int, default=4, help="residual layers, 2 SAEs each")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (median reported)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=MODES, default="data_parallel")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--streams", type=int, default=None)
    p.add_argument("--model", default="tiny-gemma2")
    p.add_argument("--device", default="cpu")
    p.add_argument("--ladder", type=int, choices=(1, 2), default=2, help="SAEs per layer")
    p.add_argument("--random-tokens", action="store_true", help="random token rows, as on Gemma")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.worker:
        args.out = args.out or "bench_distributed"  # every rank must name the same folder
        Path(args.out).mkdir(parents=True, exist_ok=True)
        return worker(args)
    print(f"{args.layers} layers x 2 SAEs of {args.d_sae} on tiny-gemma2, {args.tokens:,} tokens "
          f"each, batch 1024; {args.ranks} ranks x 1 thread against 1 process x {args.ranks} threads")  # fmt: skip
    n = args.ranks
    paths = [("1 process, 1 thread", 1, "data_parallel", 1),
             (f"1 process, {n} threads", 1, "data_parallel", n),
             *[(f"{m}, {n} ranks", n, m, 1) for m in MODES]]  # fmt: skip
    times: dict[str, list[float]] = {}
    sent: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, ranks, mode, threads in paths:
            with tempfile.TemporaryDirectory() as out:
                r = launch(args, ranks, mode, threads, out)
            times.setdefault(name, []).append(r["seconds"])
            sent[name] = r["bytes_per_step"]
    median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    one, many = median[paths[0][0]], median[paths[1][0]]
    print(f"| path | seconds | vs 1 thread | vs {n} threads | bytes sent per step (rank 0) | on paper |")
    print("|---|---|---|---|---|---|")
    for name, ranks, mode, _ in paths:
        t = median[name]
        paper = 0.0 if ranks == 1 else paper_bytes(mode, D_TINY, args.d_sae, args.ladder, args.layers,
                                                         1024, n)
        print(f"| {name} | {t:.2f} | {one / t:.2f}x | {many / t:.2f}x | {sent[name]:,.0f} | {paper:,.0f} |")
    print("\nOn paper, gemma-2-2b, 26 residual layers x 1 SAE of 16k, batch 4096, fp32:")
    print("| GPUs | data parallel, GB per rank per step | entries, GB | ratio |")
    print("|---|---|---|---|")
    for world in (2, 4, 8):
        dp = paper_bytes("data_parallel", 2304, 16384, 1, 26, 4096, world) / 1e9
        en = paper_bytes("entries", 2304, 16384, 1, 26, 4096, world) / 1e9
        print(f"| {world} | {dp:.2f} | {en:.3f} | {dp / en:.0f}x |")


if __name__ == "__main__":
    main()
