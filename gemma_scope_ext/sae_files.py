"""Writing an SAE folder in SAELens's on-disk format (safetensors weights + JSON config), atomically.

Each file is written to a temporary name in the same folder and moved into place with
``os.replace``, so a crash never leaves a half-written SAE that SAELens would try to load.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor

__all__ = ["atomic_write", "save_sae_files"]


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` for a temporary file next to ``path``, then move it onto ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_sae_files(
    path: str | Path, state_dict: dict[str, Tensor], cfg_dict: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``sae_weights.safetensors`` and ``cfg.json`` under ``path``; returns both paths."""
    from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    weights, cfg = folder / SAE_WEIGHTS_FILENAME, folder / SAE_CFG_FILENAME
    tensors = {k: v.detach().contiguous() for k, v in state_dict.items()}
    atomic_write(weights, lambda tmp: save_file(tensors, tmp))
    text = json.dumps(cfg_dict)
    atomic_write(cfg, lambda tmp: Path(tmp).write_text(text))
    return weights, cfg
