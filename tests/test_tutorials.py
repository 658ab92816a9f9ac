"""Every tutorial runs offline as a script, and so do the demo and the benchmarks' quick mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("*.py"))


def run(args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path):
    assert run([str(path)]).stdout.strip()


def test_demo_reports_saves_and_prints_commands_that_work(tmp_path):
    import shlex

    sae_dir = tmp_path / "demo" / "sae"
    out = run(["-m", "gemma_scope_cli", "demo", "--tokens", "20000", "--out", str(sae_dir)]).stdout
    for what in ("L0", "FVU", "delta loss", "zero-ablation", "strongest latents"):
        assert what in out
    site = tmp_path / "demo" / "features"  # by default beside the SAE
    assert f"open {(site / 'index.html').as_uri()}" in out
    assert (site / "demo-res-2" / "features.json").is_file()
    assert f"saved the SAE to {sae_dir.resolve()}" in out
    assert (sae_dir / "cfg.json").is_file() and (sae_dir / "sae_weights.safetensors").is_file()
    # The commands it ends with run as printed (gemma-scope is this interpreter's entry point).
    commands = out.split("next, on the saved SAE:")[1].strip().splitlines()
    assert [c.split()[:2] for c in commands] == [["gemma-scope", "eval"], ["gemma-scope", "features"]]
    for command in commands:
        args = shlex.split(command)
        run(["-m", "gemma_scope_cli", *args[1:]])
    assert (tmp_path / "demo" / "eval" / "eval.json").is_file()
    # A second run refuses to replace the saved SAE before training, unless asked.
    again = subprocess.run([sys.executable, "-m", "gemma_scope_cli", "demo", "--tokens", "20000",
                            "--out", str(sae_dir)], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 2 and "already holds a saved SAE" in again.stderr
    assert "training a" not in again.stdout

@pytest.mark.slow  # half a minute; tests/cli/test_demo_gemma3.py checks the same run in-process
def test_demo_runs_on_the_tiny_gemma3(tmp_path):
    sae_dir = tmp_path / "demo3" / "sae"
    out = run(["-m", "gemma_scope_cli", "demo", "--model", "tiny-gemma3", "--tokens", "8000",
               "--out", str(sae_dir)]).stdout  # fmt: skip
    assert "of the tiny Gemma 3" in out
    for what in ("L0", "FVU", "delta loss", "zero-ablation", "strongest latents"):
        assert what in out
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    assert (cfg["metadata"]["model_name"], cfg["metadata"]["hook_name"]) == (
        "tiny-gemma3", "blocks.2.hook_resid_post")  # fmt: skip
    commands = out.split("next, on the saved SAE:")[1].strip().splitlines()
    assert all(c.split()[:4][2:] == ["--model", "tiny-gemma3"] for c in commands), commands
