"""The activation cache on disk: safetensors shards and one JSON manifest.

Layout: ``manifest.json`` and ``shard-00000.safetensors``, ... Each shard holds the activations of
one block of token rows, one tensor ``[rows, width]`` per hook (special tokens already dropped,
the same rows at every hook), plus string metadata naming the model, hooks and dtype. The manifest
lists each finished shard with its row count, byte size and SHA-256; a shard counts only once the
manifest lists it, and both are written atomically, so a killed harvest leaves no half shard.

Why safetensors and not Arrow (SAELens's cache): a shard is a handful of dense 2-D arrays that
training reads whole, in a shuffled shard order, as tensors; safetensors maps them straight into
torch without a row-oriented conversion, holds bf16 natively (Arrow has no bfloat16 type, so
SAELens stores fp32 or raw bytes), and needs no dependency beyond what SAELens already has.
Arrow's strengths (columnar queries, streaming from the hub) are not used here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from gemma_scope_ext.files import sha256_file, write_json

__all__ = ["FORMAT", "check_compatible", "read_cache_manifest", "shard_name", "verify_shard"]

FORMAT = "gemma-scope-activations/1"
MANIFEST = "manifest.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return f"shard-{index:05d}.safetensors"


def read_cache_manifest(folder: str | Path) -> dict[str, Any]:
    """The cache's manifest, checked to be one; ValueError naming the problem otherwise."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{folder} is not an activation cache: it has no {MANIFEST} "
                         "(write one with gemma-scope harvest)")  # fmt: skip
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a Gemma Scope activation cache (format "
                         f"{data.get('format')!r}, expected {FORMAT!r})")  # fmt: skip
    return data


def write_cache_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest atomically."""
    return write_json(Path(folder) / MANIFEST, manifest)


def check_compatible(manifest: dict[str, Any], settings: dict[str, Any], where: str) -> None:
    """Refuse a cache whose settings (model, hooks, dtype, ...) differ from ``settings``."""
    wrong = {k: (manifest.get(k), v) for k, v in settings.items() if manifest.get(k) != v}
    if wrong:
        detail = "; ".join(f"{k}: cache has {a!r}, expected {b!r}" for k, (a, b) in wrong.items())
        raise ValueError(f"the activation cache at {where} does not match: {detail}")


def verify_shard(folder: Path, record: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Refuse a shard whose size, checksum or metadata is not what the manifest lists."""
    from safetensors import safe_open

    path = folder / record["file"]
    if not path.is_file():
        raise ValueError(f"shard {path} listed in the manifest is missing")
    size = path.stat().st_size
    if size != record["bytes"]:
        raise ValueError(f"shard {path} is {size} bytes, the manifest says {record['bytes']}: "
                         "it is truncated or was replaced; harvest again")  # fmt: skip
    if sha256_file(path) != record["sha256"]:
        raise ValueError(f"shard {path} fails its SHA-256 check: it is corrupt; harvest again")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    for key in ("model_name", "dtype"):
        if meta.get(key) != str(manifest[key]):
            raise ValueError(f"shard {path} was written for {key}={meta.get(key)!r}, the cache "
                             f"is for {manifest[key]!r}: a foreign shard")  # fmt: skip
    if meta.get("hooks") != json.dumps(manifest["hooks"]):
        raise ValueError(f"shard {path} holds hooks {meta.get('hooks')}, the cache lists "
                         f"{manifest['hooks']}: a foreign shard")  # fmt: skip
