"""Load time and disk use of a real-size Gemma Scope SAE: this package against SAELens.

Writes a 302 MB params.npz with the shapes of gemma-scope-2b-pt-res layer_20/width_16k (2304 x
16384, random float32 weights, members stored uncompressed as ``np.savez`` and Gemma Scope store
them) into a temporary offline Hugging Face cache, then, for each route, in fresh processes started
alternately (route A, B, C, A, B, C, ...):

  plugin             ``gemma_scope_ext.from_pretrained`` (npz memory-mapped in place)
  SAELens            ``sae_lens.SAE.from_pretrained`` with SAELens's own gemma_2 loader
                     (gemma_scope_ext not imported)
  SAELens + plugin   ``sae_lens.SAE.from_pretrained`` after ``import gemma_scope_ext`` (routed)

Each process imports its libraries untimed, then times its first load (SAELens's includes parsing
its bundled yaml, as a user's first call does), the first load plus reading every weight once (a
memory map defers the reading), and the median of ``--repeats`` further loads. Disk per SAE is
what the route added under the temporary folder besides the npz itself. The npz is in the page
cache throughout: the figures measure decoding and building, not the disk. Prints a markdown table.

    python -m benchmarks.bench_load [--processes 3] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RELEASE, SAE_ID = "gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71"
COMMIT = "0" * 40
ROUTES = ("plugin", "SAELens", "SAELens + plugin")


def _write_npz(hub: Path) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    d_in, d_sae = 2304, 16384
    arrays = {
        "W_enc": rng.standard_normal((d_in, d_sae), dtype=np.float32),
        "W_dec": rng.standard_normal((d_sae, d_in), dtype=np.float32),
        "b_enc": rng.standard_normal(d_sae, dtype=np.float32),
        "b_dec": rng.standard_normal(d_in, dtype=np.float32),
        "threshold": rng.uniform(0, 1, d_sae).astype(np.float32),
    }
    repo = hub / "models--google--gemma-scope-2b-pt-res"
    path = repo / "snapshots" / COMMIT / SAE_ID / "params.npz"
    path.parent.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    np.savez(path, **arrays)
    return path


def _disk_bytes(root: Path) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(root) for f in fs)


def _worker(route: str, tmp: Path, repeats: int) -> dict:
    """One fresh process: first load, first load + read, median repeated load, disk added."""
    import sae_lens
    import torch

    if route != "SAELens":
        import gemma_scope_ext
    before = _disk_bytes(tmp)

    def load():
        if route == "plugin":
            return gemma_scope_ext.from_pretrained(RELEASE, SAE_ID)
        return sae_lens.SAE.from_pretrained(RELEASE, SAE_ID)

    start = time.perf_counter()
    sae = load()
    first = time.perf_counter() - start
    for p in sae.parameters():
        float(p.detach().sum())  # reads every byte
    first_read = time.perf_counter() - start
    checksum = sum(float(p.detach().double().sum()) for p in sae.parameters())
    times = []
    for _ in range(repeats):
        sae = None
        start = time.perf_counter()
        sae = load()
        times.append(time.perf_counter() - start)
    return dict(route=route, first=first, first_read=first_read,
                repeated=statistics.median(times), checksum=checksum, cls=type(sae).__name__,
                extra_disk=_disk_bytes(tmp) - before, threads=torch.get_num_threads())  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per route")
    parser.add_argument("--repeats", type=int, default=5, help="repeated loads per process")
    parser.add_argument("--worker", choices=ROUTES, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.tmp, args.repeats)))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        npz = _write_npz(tmp / "hub")
        env = dict(os.environ, HF_HUB_CACHE=str(tmp / "hub"), HF_HUB_OFFLINE="1",
                   GEMMA_SCOPE_CACHE=str(tmp / "converted"))  # fmt: skip
        cmd = [sys.executable, "-m", "benchmarks.bench_load", "--tmp", str(tmp),
               "--repeats", str(args.repeats), "--worker"]  # fmt: skip
        runs: dict[str, list[dict]] = {r: [] for r in ROUTES}
        for _ in range(args.processes):
            for route in ROUTES:
                out = subprocess.run([*cmd, route], env=env, capture_output=True, text=True,
                                     check=True, cwd=Path(__file__).resolve().parents[1])  # fmt: skip
                runs[route].append(json.loads(out.stdout.strip().splitlines()[-1]))
        sums = {r["checksum"] for rs in runs.values() for r in rs}
        assert len(sums) == 1, f"the routes loaded different weights: {sums}"
        med = {r: {k: statistics.median(x[k] for x in rs) for k in ("first", "first_read",
                                                                    "repeated", "extra_disk")}
               for r, rs in runs.items()}  # fmt: skip
        base = med["SAELens"]
        print(f"Load of a {npz.stat().st_size / 1e6:.0f} MB stored params.npz (2304 x 16384), "
              f"medians of {args.processes} fresh processes per route ({args.repeats} repeated "
              f"loads each), torch threads {runs['plugin'][0]['threads']}\n")  # fmt: skip
        print("| route | first load s | speed-up | first load + read all weights s | speed-up "
              "| repeated load s | speed-up | extra disk per SAE |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        for route, m in med.items():
            print(f"| {route} ({runs[route][0]['cls']}) | {m['first']:.3f} | "
                  f"{base['first'] / m['first']:.1f}x | {m['first_read']:.3f} | "
                  f"{base['first_read'] / m['first_read']:.1f}x | {m['repeated']:.4f} | "
                  f"{base['repeated'] / m['repeated']:.1f}x | {m['extra_disk'] / 1e6:.0f} MB |")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
