"""An 8-entry suite against 8 separate stock-runner runs and SAELens's ``MultiSAETrainingRunner``.

    python -m benchmarks.bench_suite [--tokens 65536] [--rounds 2] [--d-sae 256]

Eight JumpReLU SAEs on the tiny Gemma 2 (res and mlp at layers 1 and 2, L0 coefficients 1e-3 and
1e-2), the same recipe, tokens and batch size on every path:

- suite: ``SuiteTrainingRunner``, one forward per batch (stopped after block 2) feeding all eight;
- separate: ``LanguageModelSAETrainingRunner`` with ``gemma_scope_sae_config``, once per SAE;
- multi: SAELens's ``MultiSAETrainingRunner`` over the same eight configs.

Paths run alternately for ``--rounds`` rounds (median wall time reported); the figure is SAE-tokens
per second (tokens x 8 / seconds). Then the cache reader: ``CacheSource`` through a
``MixingBuffer`` against what one SAE training step of the same batch consumes, in tokens/s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

import datasets  # noqa: E402
import torch  # noqa: E402
from sae_lens import LanguageModelSAETrainingRunner, LoggingConfig  # noqa: E402
from sae_lens.multi_sae_training_runner import (  # noqa: E402
    MultiSAETrainingRunner,
    MultiSAETrainingRunnerConfig,
)

from gemma_scope_ext.activations import CacheSource, MixingBuffer, harvest  # noqa: E402
from gemma_scope_ext.models.loading import tiny_gemma2  # noqa: E402
from gemma_scope_ext.models.text import sample_texts  # noqa: E402
from gemma_scope_ext.training import SuiteConfig, SuiteTrainingRunner, suite_entries  # noqa: E402
from gemma_scope_ext.training.runner_config import gemma_scope_sae_config  # noqa: E402
from gemma_scope_ext.training.suite_runner import entry_trainer  # noqa: E402
from gemma_scope_ext.training.suite_sources import special_token_ids, suite_tokens  # noqa: E402

CTX, PROMPTS, BATCH = 128, 16, 1024


def shared(tokens: int) -> dict:
    return dict(training_tokens=tokens, train_batch_size_tokens=BATCH, context_size=CTX,
                store_batch_size_prompts=PROMPTS, lr_warm_up_steps=10,
                # SAELens's buffer holds n_batches_in_buffer x context_size tokens: 4 batches here
                n_batches_in_buffer=4 * BATCH // CTX)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=65_536, help="training tokens per SAE")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of the three paths")
    p.add_argument("--d-sae", type=int, default=256, help="latents per SAE")
    args = p.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = tiny_gemma2()
    dataset = datasets.Dataset.from_dict({"text": sample_texts("train", 2000)})
    entries = suite_entries(model, sites=["res", "mlp"], layers=[1, 2], d_sae=args.d_sae,
                            l0_coefficients=[1e-3, 1e-2], l0_warm_up_steps=10)  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench_suite_"))
    s = shared(args.tokens)

    def suite(i: int) -> None:
        cfg = SuiteConfig(model_name="tiny-gemma2", entries=entries, output_path=str(work / f"s{i}"),
                          n_batches_in_buffer=4, **{k: v for k, v in s.items() if k != "n_batches_in_buffer"})  # fmt: skip
        SuiteTrainingRunner(cfg, model=model, progress=False).run()

    def separate(i: int) -> None:
        for j, e in enumerate(entries):
            cfg = gemma_scope_sae_config("tiny-gemma2", e.site, e.layer, e.d_sae,
                                         l0_coefficient=e.l0_coefficient, l0_warm_up_steps=10,
                                         output_path=str(work / f"p{i}-{j}"), **s)  # fmt: skip
            LanguageModelSAETrainingRunner(cfg, override_model=model, override_dataset=dataset).run()

    def multi(i: int) -> None:
        saes = {e.name: entry_trainer(SuiteConfig("tiny-gemma2", entries, **{k: v for k, v in s.items()}), e).sae.cfg
                for e in entries}  # fmt: skip
        cfg = MultiSAETrainingRunnerConfig(
            saes=saes, hook_names={e.name: e.hooks("tiny-gemma2")[0] for e in entries},
            model_name="tiny-gemma2", streaming=False, exclude_special_tokens=True, lr=7e-5,
            adam_beta1=0.0, checkpoint_path=None, output_path=str(work / f"m{i}"),
            logger=LoggingConfig(log_to_wandb=False), **s,
        )  # fmt: skip
        MultiSAETrainingRunner(cfg, override_dataset=dataset, override_model=model).run()

    paths = {"suite": suite, "separate": separate, "multi": multi}
    times: dict[str, list[float]] = {k: [] for k in paths}
    for i in range(args.rounds):
        for name, fn in paths.items():
            start = time.perf_counter()
            fn(i)
            times[name].append(time.perf_counter() - start)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    n = len(entries) * args.tokens
    print(f"8 SAEs x {args.tokens:,} tokens, d_sae {args.d_sae}, batch {BATCH}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} alternating rounds")  # fmt: skip
    print("| path | seconds | SAE-tokens/s | suite speed-up |\n|---|---:|---:|---:|")
    for k in paths:
        print(f"| {k} | {med[k]:.2f} | {n / med[k]:,.0f} | {med[k] / med['suite']:.2f}x |")

    # The cache reader against one SAE step's consumption.
    hooks = [entries[0].hooks("tiny-gemma2")[0]]
    tokens = suite_tokens("docstrings:train", model.tokenizer, 64 * CTX, CTX)
    harvest(model, tokens, hooks, work / "cache", "tiny-gemma2", rows_per_shard=PROMPTS,
            special_ids=special_token_ids(model.tokenizer), progress=False)  # fmt: skip
    buffer = MixingBuffer(CacheSource(work / "cache", hooks), 4 * BATCH, BATCH, 0.5, seed=0)
    buffer.next_batch()
    start, n_read = time.perf_counter(), 0
    while time.perf_counter() - start < 2.0:
        n_read += len(buffer.next_batch())
    read_rate = n_read / (time.perf_counter() - start)
    trainer = entry_trainer(SuiteConfig("tiny-gemma2", entries[:1], **s), entries[0])
    x = buffer.next_batch().clone()
    trainer.step(x)
    start, n_step = time.perf_counter(), 0
    while time.perf_counter() - start < 2.0:
        trainer.step(x)
        n_step += BATCH
    step_rate = n_step / (time.perf_counter() - start)
    print(f"\ncache reader {read_rate:,.0f} tokens/s (shuffled shards, checked, mixing buffer); "
          f"one SAE step consumes {step_rate:,.0f} tokens/s; ratio {read_rate / step_rate:.1f}x")


if __name__ == "__main__":
    main()
