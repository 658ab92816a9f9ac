"""Test helper: a temporary Hugging Face cache of weight files, laid out as huggingface_hub does.

``models--google--{repo}/blobs/{sha256}`` holds the bytes, ``snapshots/{commit}/{path}/params.npz``
is a relative symlink to the blob and ``refs/{ref}`` names the commit, so ``hf_hub_download`` with
``HF_HUB_OFFLINE=1`` resolves it exactly as it resolves a real download.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def use_hub_cache(tmp_path: Path, monkeypatch) -> Path:
    """Point HF_HUB_CACHE (and the converted-weights cache) into ``tmp_path``, offline."""
    import huggingface_hub.constants as constants

    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GEMMA_SCOPE_CACHE", str(tmp_path / "converted"))
    # huggingface_hub read both at import; SAELens's own loaders call it without a cache_dir.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hub


def write_params(
    hub: Path,
    repo_id: str,
    path: str,
    arrays: dict[str, np.ndarray],
    commit: str = COMMIT,
    ref: str = "main",
    compressed: bool = False,
    fortran: bool = False,
) -> Path:
    """Store ``arrays`` as ``{path}/params.npz`` of ``repo_id`` at ``commit``; return its snapshot path.

    ``compressed`` writes with ``np.savez_compressed`` (deflated members); ``fortran`` stores every
    2-D array in Fortran order (a valid npz whose .npy headers say ``fortran_order: True``).
    """
    if fortran:
        arrays = {k: np.asfortranarray(v) if v.ndim == 2 else v for k, v in arrays.items()}
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return write_file(hub, repo_id, f"{path}/params.npz", buf.getvalue(), commit, ref)


def write_safetensors(
    hub: Path, repo_id: str, path: str, tensors: dict, commit: str = COMMIT, ref: str = "main"
) -> Path:
    """Store torch ``tensors`` as ``{path}/params.safetensors`` (Gemma Scope 2's layout)."""
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in tensors.items()})
    return write_file(hub, repo_id, f"{path}/params.safetensors", data, commit, ref)


def write_file(
    hub: Path, repo_id: str, filename: str, data: bytes, commit: str = COMMIT, ref: str = "main"
) -> Path:
    """Store ``data`` as ``filename`` of ``repo_id`` at ``commit``; return its snapshot path."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    link = repo / "snapshots" / commit / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link


def random_params(
    d_in: int, d_sae: int, d_out: int | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Float32 JumpReLU weights with about a third of latents active on unit-normal inputs."""
    rng = np.random.default_rng(seed)
    d_out = d_in if d_out is None else d_out
    return {
        "W_enc": rng.standard_normal((d_in, d_sae), dtype=np.float32) / np.float32(np.sqrt(d_in)),
        "W_dec": rng.standard_normal((d_sae, d_out), dtype=np.float32) / np.float32(np.sqrt(d_sae)),
        "b_enc": 0.1 * rng.standard_normal(d_sae, dtype=np.float32),
        "b_dec": rng.standard_normal(d_out, dtype=np.float32),
        "threshold": rng.uniform(0.0, 0.8, d_sae).astype(np.float32),
    }


def jumprelu_reference(
    params: dict[str, np.ndarray], x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(latents, reconstruction) of Gemma Scope's JumpReLU SAE in float64 NumPy."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    z = x.astype(np.float64) @ p["W_enc"] + p["b_enc"]
    f = z * (z > p["threshold"])
    return f, f @ p["W_dec"] + p["b_dec"]
