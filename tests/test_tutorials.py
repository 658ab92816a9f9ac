"""Every tutorial runs offline as a script, and so do the demo and the benchmarks' quick mode."""

from __future__ import annotations

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


def test_demo_reports_the_metrics(tmp_path):
    site = tmp_path / "features"
    out = run(["-m", "gemma_scope_cli", "demo", "--tokens", "100000",
               "--features-out", str(site)]).stdout
    for what in ("L0", "FVU", "delta loss", "zero-ablation", "strongest latents"):
        assert what in out
    assert f"open {(site / 'index.html').as_uri()}" in out  # ends with the dashboard to open
    assert (site / "demo-res-2" / "features.json").is_file()
