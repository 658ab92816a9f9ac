"""Where Hugging Face keeps files, read from the environment at call time, and downloading from it.

``huggingface_hub`` reads ``HF_HOME``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` once, when it is
imported; reading them here honours changes made afterwards (tests, notebooks).
"""

from __future__ import annotations

import os
from pathlib import Path

from gemma_scope_ext.pretrained.catalog import CatalogEntry

__all__ = ["download_params", "hf_home", "hub_cache", "offline"]


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hf_home() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(os.path.expanduser(os.environ.get("HF_HOME", str(default))))


def hub_cache() -> str:
    # huggingface_hub reads these once at import; reading them here honours later changes.
    legacy = os.environ.get("HUGGINGFACE_HUB_CACHE", str(hf_home() / "hub"))
    return os.path.expanduser(os.environ.get("HF_HUB_CACHE", legacy))


def offline() -> bool:
    """Whether HF_HUB_OFFLINE is set (now, or when huggingface_hub was imported)."""
    from huggingface_hub import constants

    return _env_true("HF_HUB_OFFLINE") or bool(constants.HF_HUB_OFFLINE)


def download_params(
    entry: CatalogEntry, revision: str | None = None, force_download: bool = False
) -> Path:
    """Local path of ``entry``'s params.npz, downloaded into the Hugging Face cache if needed."""
    from huggingface_hub import hf_hub_download

    is_offline = offline()
    try:
        path = hf_hub_download(
            entry.repo_id,
            entry.filename,
            revision=revision,
            cache_dir=hub_cache(),
            local_files_only=is_offline,
            force_download=force_download,
        )
    except FileNotFoundError as err:  # huggingface_hub's LocalEntryNotFoundError
        where = f"{entry.repo_id}/{entry.filename} (revision {revision or 'main'})"
        raise FileNotFoundError(
            f"{where} is not in the Hugging Face cache at {hub_cache()}"
            + (" and HF_HUB_OFFLINE is set" if is_offline else " and could not be downloaded")
            + f"; run `gemma-scope download {entry.release} {entry.sae_id}` with network access, "
            "or point HF_HUB_CACHE at a cache that holds it"
        ) from err
    return Path(path)
