"""Writing files atomically, with the permissions an ordinary ``open()`` would give them.

Every file the package writes goes through :func:`atomic_write`: the bytes go to a temporary file in
the target's folder, reach the disk (``fsync``), get the mode the umask allows (``tempfile`` would
leave them 0600, unreadable to the group that shares a cache), and are moved onto the target with
``os.replace``. A crash leaves the old file or none, never a half-written one, and an error removes
the temporary file. Temporary files are named ``.{name}.*.tmp`` so that a later run can recognise
ones a killed process left behind (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write",
    "check_writable_dir",
    "remove_stale_temporaries",
    "sha256_file",
    "write_json",
    "write_text",
]

TMP_SUFFIX = ".tmp"


def _default_mode() -> int:
    """0666 less the process umask: what ``open(path, "w")`` would create."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, then move it onto ``path``.

    The parent folder is created if needed. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:  # on disk before it takes the target's name
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON atomically; NaN and infinities are refused (they are not JSON)."""
    return write_text(path, json.dumps(obj, indent=indent, allow_nan=False))


def check_writable_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``path`` if needed and prove a file can be written there; else raise ValueError.

    Called before long work starts, so that a bad output path fails in a second, not after hours.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"the {what} {path} is an existing file; expected a folder (or no file)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=TMP_SUFFIX, dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(
            f"cannot write to the {what} {path} ({type(err).__name__}: {err.strerror or err}); "
            "choose a folder you can write to"
        ) from err
    return path


def remove_stale_temporaries(folder: str | os.PathLike, older_than_s: float = 3600.0) -> int:
    """Delete ``.*.tmp`` files in ``folder`` untouched for ``older_than_s`` seconds.

    A process killed between creating a temporary file and renaming it leaves one behind; nothing
    ever reads them. Files younger than the limit may belong to a writer still at work and are
    kept. Returns how many were removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    now = time.time()
    for tmp in folder.glob(f".*{TMP_SUFFIX}"):
        try:
            if tmp.is_file() and now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:  # another process cleaned it first
            continue
    return removed


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks (the checksum manifests record)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
