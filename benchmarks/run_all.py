"""Run every benchmark and record the tables, with the machine, in ``benchmarks/RESULTS.md``.

Each ``benchmarks/bench_*.py`` compares the plugin with the stock SAELens path in one process and
prints a markdown table of times and ratios. ``make bench`` runs this script; pass names to run a
subset (``python -m benchmarks.run_all bench_sae``).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTES = "## Notes"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"{cpu}; {os.cpu_count()} logical cores visible, torch threads {torch.get_num_threads()}; "
        f"GPU: {gpu}; Python {platform.python_version()}, torch {torch.__version__}"
    )


def main(names: list[str]) -> int:
    names = names or sorted(p.stem for p in HERE.glob("bench_*.py"))
    sections = []
    for name in names:
        print(f"== {name}", flush=True)
        run = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{name}"],
            cwd=HERE.parent, capture_output=True, text=True,
        )  # fmt: skip
        print(run.stdout, end="")
        if run.returncode != 0:
            print(run.stderr, file=sys.stderr)
            return run.returncode
        table = "\n".join(  # TransformerLens announces device moves on stdout
            line for line in run.stdout.splitlines() if not line.startswith("Moving model to")
        )
        sections.append(f"## {name}\n\n{table.strip()}\n")
    header = (
        "# Benchmark results\n\n"
        f"Recorded {date.today().isoformat()} by `make bench` on: {machine()}.\n"
        "Each table compares the plugin with stock SAELens in the same process; ratios are what "
        "carry over between machines.\n\n"
    )
    out = HERE / "RESULTS.md"
    old = out.read_text() if out.exists() else ""
    notes = old[old.index(NOTES) :] if NOTES in old else ""  # hand-written, kept across runs
    with tempfile.NamedTemporaryFile("w", dir=HERE, delete=False, suffix=".tmp") as f:
        f.write(header + "\n".join(sections) + ("\n" + notes if notes else ""))
    os.replace(f.name, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
