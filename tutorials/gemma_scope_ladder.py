"""Gemma Scope's ladder for one layer on the tiny Gemma 2: harvest once, train many, evaluate.

    python tutorials/gemma_scope_ladder.py          # offline, well under a minute on a CPU

1. Harvest the activations one layer's Gemma Scope sites read (residual, MLP output, attention
   head outputs, and the transcoder's input/target pair) into a cache: one model pass.
2. Train the ladder from the cache with no model: res, mlp, att and a transcoder, each at 3 L0
   coefficients (12 entries), every entry with its own optimiser and schedules.
3. Read the manifest (every artifact with its config, L0, FVU and dead fraction).
4. Evaluate the saved folders with ``gemma-scope eval`` (delta LM loss, FVU, L0 with the SAE spliced).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402

import gemma_scope_cli  # noqa: E402
import gemma_scope_ext as gs  # noqa: E402
from gemma_scope_ext.activations import harvest  # noqa: E402
from gemma_scope_ext.training.suite_sources import special_token_ids, suite_tokens  # noqa: E402

LAYER, D_SAE, TOKENS = 1, 64, 64 * 40

torch.manual_seed(0)
work = Path(tempfile.mkdtemp(prefix="gemma_scope_ladder_"))
try:
    model = gs.tiny_gemma2()
    entries = gs.suite_entries(model, sites=["res", "mlp", "att", "transcoder"], layers=[LAYER],
                               d_sae=D_SAE, l0_coefficients=[1e-3, 1e-2, 1e-1],
                               l0_warm_up_steps=10)  # fmt: skip
    cfg = gs.SuiteConfig(model_name="tiny-gemma2", entries=entries, training_tokens=TOKENS,
                         train_batch_size_tokens=64, context_size=32, lr=3e-3, lr_warm_up_steps=5,
                         output_path=str(work / "suite"), cache_path=str(work / "cache"))  # fmt: skip

    # 1. One pass of the model, every hook the ladder reads.
    tokens = suite_tokens(cfg.dataset, model.tokenizer, TOKENS, cfg.context_size)
    manifest = harvest(model, tokens, cfg.hooks(), cfg.cache_path, "tiny-gemma2",
                       rows_per_shard=8, special_ids=special_token_ids(model.tokenizer),
                       progress=False)  # fmt: skip
    print(f"cache: {len(manifest['shards'])} shards of {', '.join(manifest['hooks'])}")

    # 2. Twelve entries from the cache, no model needed.
    gs.SuiteTrainingRunner(cfg, progress=False).run()

    # 3. The manifest.
    suite = json.loads((work / "suite" / "manifest.json").read_text())
    print(f"{'entry':34} {'L0':>7} {'FVU':>6} {'dead':>5}")
    for name, record in suite["entries"].items():
        m = record["metrics"]
        print(f"{name:34} {m['l0']:7.1f} {m['fvu']:6.3f} {m['dead_fraction']:5.2f}")

    # 4. gemma-scope eval on the residual rung and the transcoders.
    folders = [str(work / "suite" / r["path"]) for r in suite["entries"].values()
               if r["site"] in ("res", "transcoder")]  # fmt: skip
    argv = ["eval", "--quiet", "--n-seqs", "4", "--seq-len", "32", "--no-ablations",
            "--out", str(work / "eval")]  # fmt: skip
    for folder in folders:
        argv += ["--sae", folder]
    assert gemma_scope_cli.main(argv) == 0
finally:
    shutil.rmtree(work, ignore_errors=True)
