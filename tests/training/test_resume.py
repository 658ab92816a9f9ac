"""Killed with SIGKILL and restarted, a suite (and a harvest) ends where an uninterrupted run ends.

The child process kills itself with SIGKILL at a chosen point (inside a training step's data
fetch, or between writing a shard and listing it), so nothing gets to clean up.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

from gemma_scope_ext.training.suite_config import SuiteConfig, SuiteEntry
from gemma_scope_ext.training.suite_runner import SuiteTrainingRunner
from tests.training.test_suite import BATCH, suite_cfg, trained_weights

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from gemma_scope_ext.models.loading import tiny_gemma2
    from gemma_scope_ext.training.suite_config import SuiteConfig
    kind, cfg_path, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    calls = [0]
    def dying(real):
        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        return wrapped
    model = tiny_gemma2()
    cfg = SuiteConfig.from_dict(json.load(open(cfg_path)))
    if kind == "train":
        from gemma_scope_ext.activations.buffer import MixingBuffer
        from gemma_scope_ext.training import suite_runner
        MixingBuffer.next_batch = dying(MixingBuffer.next_batch)
        suite_runner.SuiteTrainingRunner(cfg, model=model, progress=False).run()
    else:
        import importlib
        h = importlib.import_module("gemma_scope_ext.activations.harvest")
        from gemma_scope_ext.training.suite_sources import suite_tokens
        h.write_cache_manifest = dying(h.write_cache_manifest)
        tokens = suite_tokens(cfg.dataset, model.tokenizer, cfg.training_tokens, cfg.context_size)
        h.harvest(model, tokens, cfg.hooks(), cfg.cache_path, "tiny-gemma2", rows_per_shard=4,
                  special_ids=[0, 1, 2], progress=False)
""")


def run_child(tmp_path: Path, kind: str, cfg: SuiteConfig, kill_at: int) -> int:
    script, cfg_path = tmp_path / "child.py", tmp_path / f"{kind}.json"
    script.write_text(CHILD)
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    done = subprocess.run([sys.executable, str(script), kind, str(cfg_path), str(kill_at)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    if done.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.returncode


def entries() -> list[SuiteEntry]:
    return [SuiteEntry("sae", "res", 0, 32, l0_coefficient=1e-3, seed=1, l0_warm_up_steps=4,
                       training_tokens=5 * BATCH),
            SuiteEntry("transcoder", "transcoder", 1, 24, l0_coefficient=2e-3, seed=2,
                       l0_warm_up_steps=4)]  # fmt: skip


def test_a_killed_suite_resumes_to_the_same_weights(tiny_model, tmp_path) -> None:
    torch.set_num_threads(1)
    whole = suite_cfg(tmp_path / "whole", entries(), mix_fraction=0.5, checkpoint_every_steps=3)
    SuiteTrainingRunner(whole, model=tiny_model, progress=False).run()
    cut = suite_cfg(tmp_path / "cut", entries(), mix_fraction=0.5, checkpoint_every_steps=3)
    # Killed fetching step 9's batch: the SAE finished at step 5, checkpoints at steps 3 and 6.
    assert run_child(tmp_path, "train", cut, kill_at=9) == -signal.SIGKILL
    out = Path(cut.output_path)
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["entries"]) == [entries()[0].name]  # the SAE had finished
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == 6
    sae_file = out / entries()[0].name / "sae_weights.safetensors"
    stamp = sae_file.stat().st_mtime_ns
    shutil.copytree(out, tmp_path / "moved")  # for the control below
    assert run_child(tmp_path, "train", cut, kill_at=0) == 0  # restarted, runs to the end
    assert sae_file.stat().st_mtime_ns == stamp  # the finished SAE was not trained again
    for e in entries():
        a, b = trained_weights(out / e.name), trained_weights(Path(whole.output_path) / e.name)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)
    # Control: the same resume with the data position moved by one chunk trains other weights.
    moved = suite_cfg(tmp_path, entries(), mix_fraction=0.5, output_path=str(tmp_path / "moved"))
    data_pt = tmp_path / "moved" / "checkpoints" / "step-6" / "stream-0.pt"
    state = torch.load(data_pt, weights_only=False)
    state["source_position"] += 1
    torch.save(state, data_pt)
    SuiteTrainingRunner(moved, model=tiny_model, progress=False).run()
    name = entries()[1].name
    diff = trained_weights(tmp_path / "moved" / name)["W_enc"] - \
        trained_weights(Path(whole.output_path) / name)["W_enc"]  # fmt: skip
    assert diff.abs().max() > 1e-5


def test_a_killed_harvest_resumes_with_every_token_once(tiny_model, tmp_path) -> None:
    cfg = suite_cfg(tmp_path, [SuiteEntry("transcoder", "transcoder", 1, 8)],
                    cache_path=str(tmp_path / "whole"))  # fmt: skip
    assert run_child(tmp_path, "harvest", cfg, kill_at=0) == 0
    cut = suite_cfg(tmp_path, cfg.entries, cache_path=str(tmp_path / "cut"))
    # Killed after writing shard 2 and before listing it.
    assert run_child(tmp_path, "harvest", cut, kill_at=3) == -signal.SIGKILL
    listed = json.loads((tmp_path / "cut" / "manifest.json").read_text())["shards"]
    assert len(listed) == 2 and (tmp_path / "cut" / "shard-00002.safetensors").is_file()
    assert run_child(tmp_path, "harvest", cut, kill_at=0) == 0
    a = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    b = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    assert len(a["shards"]) > 3 and [s["rows"] for s in a["shards"]] == [s["rows"] for s in b["shards"]]
    # Same tensors (the bytes may differ: safetensors writes its metadata map in any order).
    for shard in a["shards"]:
        x, y = (load_file(tmp_path / d / shard["file"]) for d in ("whole", "cut"))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    x = load_file(tmp_path / "cut" / "shard-00001.safetensors")
    assert not torch.equal(x["blocks.1.hook_mlp_out"][:5], y["blocks.1.hook_mlp_out"][:5])  # control
