"""Load time of a real-size Gemma Scope SAE: this package (cold and warm) against SAELens.

Writes a 302 MB params.npz with the shapes of gemma-scope-2b-pt-res layer_20/width_16k (2304 x
16384, random float32 weights) into a temporary offline Hugging Face cache, then times:

  plugin, cold       ``gemma_scope_ext.from_pretrained`` with no converted copy (npz -> safetensors)
  plugin, warm       the same once the safetensors copy exists (memory-mapped)
  SAELens route      ``sae_lens.SAE.from_pretrained`` after ``import gemma_scope_ext`` (warm cache)
  SAELens original   ``sae_lens.SAE.from_pretrained`` through SAELens's own gemma_2 loader

Every timing is the median of ``--repeats`` runs with the npz already in the OS page cache, so it
measures decoding and building, not the disk. Prints a markdown table.

    python -m benchmarks.bench_load [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

RELEASE, SAE_ID = "gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71"
COMMIT = "0" * 40


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


def _median_time(fn, repeats: int, before=None) -> tuple[float, float, object]:
    """(median seconds, best seconds, last result) of ``repeats`` calls, ``before`` run untimed."""
    times, out = [], None
    for _ in range(repeats):
        if before is not None:
            before()
        out = None  # free the previous SAE before the next load
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        # Set before huggingface_hub is imported: SAELens's loader relies on its import-time values.
        os.environ.update(HF_HUB_CACHE=str(tmp / "hub"), HF_HUB_OFFLINE="1",
                          GEMMA_SCOPE_CACHE=str(tmp / "converted"))  # fmt: skip
        npz = _write_npz(tmp / "hub")
        import sae_lens
        import torch
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        import gemma_scope_ext
        from gemma_scope_ext.pretrained.sae_lens_route import original_loader

        get_pretrained_saes_directory()  # parse SAELens's yaml once, outside the timings
        stock_loader = original_loader("gemma_2")
        converted = tmp / "converted"

        def clear_cache():
            shutil.rmtree(converted, ignore_errors=True)

        def ours():
            return gemma_scope_ext.from_pretrained(RELEASE, SAE_ID)

        def routed():
            return sae_lens.SAE.from_pretrained(RELEASE, SAE_ID)

        def stock():
            return sae_lens.SAE.from_pretrained(RELEASE, SAE_ID, converter=stock_loader)

        stock()  # first touch: page cache and lazy imports

        def touched(load):
            # A memory-mapped load defers reading: also time reading every weight once.
            def run():
                sae = load()
                sum(float(p.detach().sum()) for p in sae.parameters())
                return sae

            return run

        loads = {
            "SAELens original (gemma_2 loader)": (stock, None),
            "plugin, cold (npz -> safetensors)": (ours, clear_cache),
            "plugin, warm (safetensors mmap)": (ours, None),
            "SAELens route via plugin, warm": (routed, None),
        }
        rows, touched_rows = {}, {}
        for name, (load, before) in loads.items():
            rows[name] = _median_time(load, args.repeats, before)
            touched_rows[name] = _median_time(touched(load), args.repeats, before)
        saes = [r[2] for r in rows.values()]
        for sae in saes[1:]:
            for name in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"):
                assert torch.equal(getattr(sae, name), getattr(saes[0], name)), name
        base = rows["SAELens original (gemma_2 loader)"][0]
        size = npz.stat().st_size / 1e6
        print(f"Load of a {size:.0f} MB params.npz (2304 x 16384), median of {args.repeats}, "
              f"CPU threads {torch.get_num_threads()}\n")  # fmt: skip
        base_touched = touched_rows["SAELens original (gemma_2 loader)"][0]
        print(
            "| route | load, median s | speed-up | load + read all weights, median s | speed-up |"
        )
        print("|---|---|---|---|---|")
        for name, (med, _, _) in rows.items():
            med_t = touched_rows[name][0]
            print(f"| {name} | {med:.3f} | {base / med:.1f}x | {med_t:.3f} | "
                  f"{base_touched / med_t:.1f}x |")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
