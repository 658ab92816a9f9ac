"""Harvesting: run the model once over token rows and store the activations of any set of hooks.

One shard per ``rows_per_shard`` token rows, in row order; each shard is written atomically and
then listed in the manifest (atomically too). A rerun over the same folder and settings continues
after the last listed shard, so an interrupted harvest ends with every token once: shard ``i``
always holds rows ``[i * rows_per_shard, (i + 1) * rows_per_shard)``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from jaxtyping import Int
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from gemma_scope_ext.activations.cache_format import (
    DTYPES,
    FORMAT,
    MANIFEST,
    check_compatible,
    read_cache_manifest,
    shard_name,
    write_cache_manifest,
)
from gemma_scope_ext.activations.live import activations_of
from gemma_scope_ext.files import atomic_write, check_writable_dir, sha256_file

__all__ = ["HarvestPlan", "harvest", "plan_harvest"]


class HarvestPlan(NamedTuple):
    """What a harvest will write."""

    n_shards: int
    """Shards in all (each ``rows_per_shard`` token rows)."""
    n_tokens: int
    """Token positions covered, special tokens included."""
    bytes_needed: int
    """Upper bound of the disk the shards take (special tokens are dropped, so a little less)."""


def plan_harvest(n_rows: int, context: int, rows_per_shard: int, widths: Sequence[int],
                 dtype: str) -> HarvestPlan:  # fmt: skip
    """Shards, tokens and bytes for ``n_rows`` rows of ``context`` tokens."""
    n_shards = n_rows // rows_per_shard
    n_tokens = n_shards * rows_per_shard * context
    itemsize = DTYPES[dtype].itemsize
    return HarvestPlan(n_shards, n_tokens, n_tokens * sum(widths) * itemsize)


def harvest(
    model: Any,
    tokens: Int[Tensor, "rows ctx"],
    hooks: Sequence[str],
    out: str | Path,
    model_name: str,
    rows_per_shard: int = 8,
    dtype: str = "float32",
    special_ids: Sequence[int] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Write (or finish writing) the cache at ``out``; returns its manifest.

    The disk needed is printed before the first forward pass.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    hooks = list(dict.fromkeys(hooks))
    missing = [h for h in hooks if h not in model.hook_dict]
    if missing:
        raise ValueError(f"the model has no hooks {missing}; see gs.hook_name for Gemma Scope's")
    folder = check_writable_dir(out, "cache folder")
    _, probe = model.run_with_cache(tokens[:1, :2], names_filter=hooks)  # widths, 2 tokens
    widths = {h: int(probe[h].reshape(2, -1).shape[1]) for h in hooks}
    settings = {"format": FORMAT, "model_name": model_name, "hooks": hooks, "widths": widths,
                "dtype": dtype, "context_size": int(tokens.shape[1]),
                "rows_per_shard": rows_per_shard, "special_token_ids": sorted(special_ids)}  # fmt: skip
    if (folder / MANIFEST).is_file():
        manifest = read_cache_manifest(folder)
        check_compatible(manifest, settings, str(folder))
    else:
        manifest = {**settings, "shards": []}
    plan = plan_harvest(len(tokens), tokens.shape[1], rows_per_shard, list(widths.values()), dtype)
    done = len(manifest["shards"])
    print(f"harvest: {plan.n_shards} shards, {plan.n_tokens:,} tokens, up to "
          f"{plan.bytes_needed / 2**20:,.1f} MiB on disk ({done} shards already done)",
          file=sys.stderr)  # fmt: skip
    meta = {"model_name": model_name, "dtype": dtype, "hooks": json.dumps(hooks)}
    device = next(model.parameters()).device
    for i in tqdm(range(done, plan.n_shards), disable=not progress, file=sys.stderr,
                  desc="harvest", unit="shard"):  # fmt: skip
        rows = tokens[i * rows_per_shard : (i + 1) * rows_per_shard].to(device)
        packed = activations_of(model, rows, hooks, special_ids).to("cpu", DTYPES[dtype])
        parts = dict(zip(hooks, packed.split(list(widths.values()), dim=1), strict=True))
        tensors = {h: p.contiguous() for h, p in parts.items()}
        path = folder / shard_name(i)
        atomic_write(path, lambda tmp, t=tensors: save_file(t, tmp, metadata=meta))
        manifest["shards"].append({"file": path.name, "rows": int(packed.shape[0]),
                                   "bytes": path.stat().st_size, "sha256": sha256_file(path)})  # fmt: skip
        write_cache_manifest(folder, manifest)
    return manifest


def cache_tokens(manifest: dict[str, Any]) -> int:
    """Activation rows (non-special tokens) the cache holds."""
    return sum(s["rows"] for s in manifest["shards"])

