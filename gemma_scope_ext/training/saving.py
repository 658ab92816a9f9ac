"""Saving from training: the SAE folder writer (``saes/saving.py``), and a final save that never
replaces an SAE already saved nor loses the one just trained."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from gemma_scope_ext.saes.saving import holds_saved_sae, save_sae_files

__all__ = ["holds_saved_sae", "save_beside", "save_sae_files"]


def save_beside(
    path: str | os.PathLike, state_dict: dict[str, Tensor], cfg_dict: dict[str, Any],
    overwrite: bool = False,
) -> tuple[Path, Path]:  # fmt: skip
    """``save_sae_files``, except that over a saved SAE without ``overwrite`` the files go to the
    first free ``path-N`` and FileExistsError then names it: the old SAE is kept, and the one
    just trained (hours of work, perhaps) is not lost."""
    folder = Path(path)
    if overwrite or not holds_saved_sae(folder):
        return save_sae_files(folder, state_dict, cfg_dict, overwrite)
    n = 1
    while Path(f"{folder}-{n}").exists():
        n += 1
    save_sae_files(f"{folder}-{n}", state_dict, cfg_dict)
    raise FileExistsError(
        f"{folder} already holds a saved SAE, which was kept; this one was saved to "
        f"{folder}-{n} instead (pass overwrite=True to replace the old one)"
    )
