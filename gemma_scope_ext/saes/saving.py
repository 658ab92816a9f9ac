"""Writing an SAE folder in SAELens's on-disk format (safetensors weights + JSON config), atomically.

Each file is written to a temporary name in the same folder and moved into place (see
``gemma_scope_ext.files``), so a crash never leaves a half-written SAE that SAELens would try to load;
temporaries an earlier killed save left behind are removed first. A folder that already holds a
saved SAE is replaced only when asked (``overwrite=True``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from gemma_scope_ext.files import atomic_write, remove_stale_temporaries, write_text

__all__ = ["holds_saved_sae", "save_inference_sae", "save_sae_files"]


def holds_saved_sae(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` already holds SAELens's weights or config file."""
    from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME

    folder = Path(folder)
    return (folder / SAE_WEIGHTS_FILENAME).exists() or (folder / SAE_CFG_FILENAME).exists()


def save_sae_files(
    path: str | os.PathLike,
    state_dict: dict[str, Tensor],
    cfg_dict: dict[str, Any],
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write ``sae_weights.safetensors`` and ``cfg.json`` under ``path``; returns both paths.

    Raises FileExistsError, writing nothing, if ``path`` already holds a saved SAE and
    ``overwrite`` is False; ValueError if ``path`` is a file.
    """
    from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME
    from safetensors.torch import save_file

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"cannot save an SAE to {folder}: it is a file; expected a folder")
    if holds_saved_sae(folder) and not overwrite:
        raise FileExistsError(
            f"{folder} already holds a saved SAE; choose another folder, or pass overwrite=True "
            "to replace it"
        )
    remove_stale_temporaries(folder)
    weights, cfg = folder / SAE_WEIGHTS_FILENAME, folder / SAE_CFG_FILENAME
    tensors = {k: v.detach().contiguous() for k, v in state_dict.items()}
    atomic_write(weights, lambda tmp: save_file(tensors, tmp))
    write_text(cfg, json.dumps(cfg_dict))
    return weights, cfg


def save_inference_sae(
    sae: Any, path: str | os.PathLike, overwrite: bool = False
) -> tuple[Path, Path]:
    """SAELens's ``save_model`` for an inference SAE or transcoder (its state dict after
    ``process_state_dict_for_saving``, and ``cfg.to_dict()``), through ``save_sae_files``."""
    state = sae.state_dict()
    sae.process_state_dict_for_saving(state)
    return save_sae_files(path, state, sae.cfg.to_dict(), overwrite)
