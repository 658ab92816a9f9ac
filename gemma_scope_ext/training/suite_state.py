"""What a suite leaves on disk: the manifest of finished entries and resumable checkpoints.

``manifest.json`` lists every finished entry (its folder, hooks, config and final metrics) and is
rewritten atomically each time an entry finishes; an entry listed there is never trained again.
A checkpoint is a fresh folder ``checkpoints/step-N`` (weights, optimiser, schedulers and
sparsity counters of every running entry, the mixing buffer's contents and generator, the data
position, the global RNG); it counts only once ``checkpoints/latest.json`` names it, which is
written atomically last, so a process killed mid-checkpoint leaves the previous one in force.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from gemma_scope_ext.files import write_json

__all__ = ["load_checkpoint", "read_manifest", "save_checkpoint", "write_manifest"]

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


def save_checkpoint(folder: str | Path, step: int, trainers: dict[str, Any],
                    data_state: dict[str, Any]) -> Path:  # fmt: skip
    """Write checkpoint ``step`` under ``folder/checkpoints`` and make it the latest."""
    root = Path(folder) / "checkpoints"
    target = root / f"step-{step}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name, trainer in trainers.items():
        trainer.save_trainer_state(target / name)
        torch.save(trainer.sae.state_dict(), target / name / "weights.pt")
    torch.save({**data_state, "step": step, "rng": torch.get_rng_state()}, target / "data.pt")
    write_json(root / LATEST, {"step": step, "folder": target.name, "entries": sorted(trainers)})
    for old in root.glob("step-*"):
        if old.name != target.name:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _latest(root: Path) -> Path | None:
    path = root / LATEST
    if not path.is_file():
        return None
    return root / json.loads(path.read_text())["folder"]


def load_checkpoint(folder: str | Path, trainers: dict[str, Any]) -> dict[str, Any] | None:
    """Restore every trainer named in the latest checkpoint; returns its data state, or None."""
    latest = _latest(Path(folder) / "checkpoints")
    if latest is None:
        return None
    for name, trainer in trainers.items():
        part = latest / name
        if not part.is_dir():
            raise ValueError(f"checkpoint {latest} has no state for entry {name}; the suite's "
                             "entries changed since it was written: remove it to start afresh")  # fmt: skip
        trainer.load_trainer_state(part)
        trainer.sae.load_state_dict(torch.load(part / "weights.pt", weights_only=True))
    state = torch.load(latest / "data.pt", weights_only=False)
    torch.set_rng_state(state.pop("rng"))
    return state
