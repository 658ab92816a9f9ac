"""Writing an SAE folder in SAELens's on-disk format (safetensors weights + JSON config), atomically.

Each file is written to a temporary name in the same folder and moved into place (see
``gemma_scope_ext.files``), so a crash never leaves a half-written SAE that SAELens would try to load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor

from gemma_scope_ext.files import atomic_write, write_text

__all__ = ["save_sae_files"]


def save_sae_files(
    path: str | Path, state_dict: dict[str, Tensor], cfg_dict: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``sae_weights.safetensors`` and ``cfg.json`` under ``path``; returns both paths."""
    from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME

    folder = Path(path)
    weights, cfg = folder / SAE_WEIGHTS_FILENAME, folder / SAE_CFG_FILENAME
    tensors = {k: v.detach().contiguous() for k, v in state_dict.items()}
    atomic_write(weights, lambda tmp: save_file(tensors, tmp))
    write_text(cfg, json.dumps(cfg_dict))
    return weights, cfg
