"""Saving and loading :class:`FeatureData`: tensors as safetensors, the rest as JSON.

A folder holds ``features.safetensors`` and ``features.json``; the JSON is written second and
records the SHA-256 of the tensors file, so a folder whose tensors were replaced or cut short by an
interrupted run is refused on load rather than rendered. Both files are written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gemma_scope_ext.features.config import FeatureConfig
from gemma_scope_ext.features.results import FeatureData, SAEInfo
from gemma_scope_ext.files import atomic_write, sha256_file, write_json

__all__ = ["FORMAT_VERSION", "load_features", "save_features"]

FORMAT_VERSION = 1
TENSORS, META = "features.safetensors", "features.json"


def save_features(data: FeatureData, folder: str | os.PathLike) -> Path:
    """Write ``data`` into ``folder`` (created if needed); returns the folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors = {"fires": data.fires, "act_sum": data.act_sum, "hist_counts": data.hist_counts,
               "hist_exponent": data.hist_exponent,
               **{f"top.{k}": v for k, v in data.top.items()},
               **{f"sample.{k}": v for k, v in data.sample.items()},
               **{f"output.{k}": v for k, v in data.output.items()}}  # fmt: skip
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    atomic_write(folder / TENSORS, lambda tmp: save_file(tensors, tmp))
    write_json(folder / META, {
        "format_version": FORMAT_VERSION, "info": vars(data.info), "config": data.config.to_dict(),
        "n_tokens": data.n_tokens, "tensors_sha256": sha256_file(folder / TENSORS),
        "token_strings": {str(k): v for k, v in data.token_strings.items()},
        "special_token_ids": list(data.special_token_ids),
    }, indent=None)  # fmt: skip
    return folder


def load_features(folder: str | os.PathLike) -> FeatureData:
    """Read what :func:`save_features` wrote; refuses missing, mismatched or unknown files."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path, tensor_path = folder / META, folder / TENSORS
    if not meta_path.is_file() or not tensor_path.is_file():
        raise FileNotFoundError(
            f"{folder} has no {META} and {TENSORS}; collect features first "
            "(gemma-scope features --sae ... --out DIR, or save_features)"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{meta_path} has format version {meta.get('format_version')!r}; this version reads "
            f"{FORMAT_VERSION}. Collect the features again with this version"
        )
    if sha256_file(tensor_path) != meta["tensors_sha256"]:
        raise ValueError(
            f"{tensor_path} does not match {meta_path} (SHA-256 differs): it was replaced or an "
            "interrupted run left it half-written; collect the features again"
        )
    t = load_file(tensor_path)

    def part(prefix: str) -> dict:
        return {k.removeprefix(prefix): v for k, v in t.items() if k.startswith(prefix)}

    return FeatureData(
        info=SAEInfo(**meta["info"]), config=FeatureConfig(**meta["config"]),
        n_tokens=int(meta["n_tokens"]), fires=t["fires"], act_sum=t["act_sum"],
        hist_counts=t["hist_counts"], hist_exponent=t["hist_exponent"], top=part("top."),
        sample=part("sample."), output=part("output."),
        token_strings={int(k): v for k, v in meta["token_strings"].items()},
        special_token_ids=tuple(meta["special_token_ids"]),
    )  # fmt: skip
