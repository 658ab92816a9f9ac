"""What a suite leaves on disk: the manifest of finished entries and resumable checkpoints.

``manifest.json`` lists every finished entry (its folder, hooks, config and final metrics) and is
rewritten atomically each time an entry finishes; an entry listed there is never trained again.
A checkpoint is a fresh folder ``checkpoints/step-N`` (weights, optimiser, schedulers and
sparsity counters of every running entry; each data stream's mixing buffer, generator and data
position, ``stream-S.pt``; each rank's RNG, ``rank-R.pt``); it counts only once
``checkpoints/latest.json`` names it, which is written atomically last, after every rank has
written its part, so a process killed mid-checkpoint leaves the previous one in force.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from gemma_scope_ext.files import write_json

__all__ = [
    "begin_checkpoint",
    "commit_checkpoint",
    "load_checkpoint",
    "read_manifest",
    "save_checkpoint",
    "write_checkpoint_part",
    "write_manifest",
]

MANIFEST = "manifest.json"
LATEST = "latest.json"


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The suite's manifest, or an empty one if none was written yet."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {"entries": {}}
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or "entries" not in data:
        raise ValueError(f"{path} is not a suite manifest (no 'entries'); move it away or "
                         "choose another output_path")  # fmt: skip
    return data


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest atomically."""
    return write_json(Path(folder) / MANIFEST, manifest)


def begin_checkpoint(folder: str | Path, step: int) -> Path:
    """A fresh, empty folder for checkpoint ``step`` (made by the writing rank only)."""
    target = Path(folder) / "checkpoints" / f"step-{step}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    return target


def write_checkpoint_part(target: Path, trainers: dict[str, Any],
                          streams: dict[int, dict[str, Any]], rank: int) -> None:  # fmt: skip
    """One rank's share of a checkpoint: its ``trainers``, its streams' buffers and its RNG."""
    for name, trainer in trainers.items():
        trainer.save_trainer_state(target / name)
        torch.save(trainer.sae.state_dict(), target / name / "weights.pt")
    for s, state in streams.items():
        torch.save(state, target / f"stream-{s}.pt")
    torch.save({"rng": torch.get_rng_state()}, target / f"rank-{rank}.pt")


def commit_checkpoint(target: Path, step: int, entries: list[str], data_streams: int) -> None:
    """Make ``target`` the latest checkpoint (written last, atomically) and drop older ones."""
    root = target.parent
    write_json(root / LATEST, {"step": step, "folder": target.name, "entries": sorted(entries),
                               "data_streams": data_streams})  # fmt: skip
    for old in root.glob("step-*"):
        if old.name != target.name:
            shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(folder: str | Path, step: int, trainers: dict[str, Any],
                    streams: dict[int, dict[str, Any]]) -> Path:  # fmt: skip
    """Checkpoint ``step`` of a single process: every trainer and stream, made the latest."""
    target = begin_checkpoint(folder, step)
    write_checkpoint_part(target, trainers, streams, rank=0)
    commit_checkpoint(target, step, list(trainers), data_streams=len(streams))
    return target


def _latest(root: Path) -> dict[str, Any] | None:
    """The index ``latest.json`` (step, folder, entries, data streams), or None."""
    path = root / LATEST
    return json.loads(path.read_text()) if path.is_file() else None


def load_checkpoint(folder: str | Path, trainers: dict[str, Any], streams: range,
                    data_streams: int = 1,
                    rank: int = 0) -> tuple[int, dict[int, dict[str, Any]]] | None:  # fmt: skip
    """Restore ``trainers`` and this rank's RNG from the latest checkpoint; returns its step and
    the buffer states of ``streams``, or None if there is no checkpoint."""
    root = Path(folder) / "checkpoints"
    index = _latest(root)
    if index is None:
        return None
    latest, saved = root / index["folder"], index.get("data_streams", 1)
    if saved != data_streams:
        raise ValueError(f"checkpoint {latest} was written with {saved} data streams, this run has "
                         f"{data_streams}: resume with data_streams={saved} (any number of "
                         "processes that divides it), or remove the checkpoints folder")  # fmt: skip
    for s in streams:
        if not (latest / f"stream-{s}.pt").is_file():
            raise ValueError(f"checkpoint {latest} has no state for data stream {s}; it is "
                             "incomplete: remove the checkpoints folder to start afresh")  # fmt: skip
    for name, trainer in trainers.items():
        part = latest / name
        if not part.is_dir():
            raise ValueError(f"checkpoint {latest} has no state for entry {name}; the suite's "
                             "entries changed since it was written: remove it to start afresh")  # fmt: skip
        trainer.load_trainer_state(part)
        trainer.sae.load_state_dict(torch.load(part / "weights.pt", weights_only=True))
    mine = latest / f"rank-{rank}.pt"
    if mine.is_file():
        torch.set_rng_state(torch.load(mine, weights_only=False)["rng"])
    states = {s: torch.load(latest / f"stream-{s}.pt", weights_only=False) for s in streams}
    return int(index["step"]), states
