"""The converted-weights cache: a checked safetensors copy of each params.npz, memory-mapped.

The first load converts the npz into ``params.safetensors`` under :func:`cache_root` (HF-style
layout: ``models--google--{repo}/{commit}/{path}/``), written atomically; later loads memory-map it
(copy-on-write), which skips the zip decoding. A cache file is trusted only if its header parses,
its arrays have the expected names, dtypes and shapes and tile the file exactly, it records the
size and mtime of the npz it came from, and each array's CRC32 matches the one recorded at write
time; anything else is rebuilt. Weights are cached as released. Conversions hold a lock on the
cache folder (:func:`conversion_lock`), under which temporary files of killed writers are removed.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import torch

from gemma_scope_ext.files import atomic_write, remove_stale_temporaries
from gemma_scope_ext.pretrained.catalog import CatalogEntry, expected_shapes
from gemma_scope_ext.pretrained.hub import hf_home
from gemma_scope_ext.saes.params import PARAM_NAMES

__all__ = [
    "cache_is_valid",
    "cache_path",
    "cache_root",
    "conversion_lock",
    "source_tag",
    "write_cache",
]

_CACHE_FORMAT = "gemma_scope_ext.params/2"


def cache_root() -> Path:
    """Where converted weights live: GEMMA_SCOPE_CACHE, else ``$HF_HOME/gemma_scope``."""
    if os.environ.get("GEMMA_SCOPE_CACHE"):
        return Path(os.path.expanduser(os.environ["GEMMA_SCOPE_CACHE"]))
    return hf_home() / "gemma_scope"


def cache_path(entry: CatalogEntry, npz_path: str | os.PathLike) -> Path:
    """Where the safetensors copy of ``npz_path`` lives, keyed by the snapshot's commit."""
    snapshot = Path(npz_path).parents[len(Path(entry.filename).parts) - 1]
    commit = snapshot.name if snapshot.parent.name == "snapshots" else "local"
    repo_folder = "models--" + entry.repo_id.replace("/", "--")
    return cache_root() / repo_folder / commit / entry.path / "params.safetensors"


def source_tag(npz_path: Path) -> dict[str, str]:
    """What identifies the npz a cache file came from.

    Size and mtime alone let a file replaced by another of the same size and mtime be served stale;
    the inode and ctime change whenever a file is replaced or rewritten, and the CRC32s and sizes
    the zip's central directory records for its members change with its content (read from the
    directory alone: no data is decompressed).
    """
    st = npz_path.stat()
    with zipfile.ZipFile(npz_path) as zf:
        members = ";".join(f"{i.filename}:{i.CRC:08x}:{i.file_size}" for i in zf.infolist())
    return {
        "format": _CACHE_FORMAT,
        "source_size": str(st.st_size),
        "source_mtime_ns": str(st.st_mtime_ns),
        "source_inode": f"{st.st_dev}:{st.st_ino}",
        "source_ctime_ns": str(st.st_ctime_ns),
        "source_members": hashlib.sha256(members.encode()).hexdigest(),
    }


@contextmanager
def conversion_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cache folder while converting into it.

    The kernel drops the lock when its holder dies, even by SIGKILL, so whoever holds it knows that
    no writer is alive and every temporary file in the folder is a dead one's: they are removed.
    Concurrent first loads wait here instead of converting the same file twice.
    """
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): only temporaries an hour old are surely dead
        remove_stale_temporaries(folder)
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        remove_stale_temporaries(folder, older_than_s=float("-inf"))
        yield
    finally:
        os.close(fd)  # releases the lock


def _crc_tag(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """CRC32 of each tensor's bytes (46 ms for 302 MB): bit rot in a cache file is caught."""
    return {f"crc32:{k}": str(zlib.crc32(v.contiguous().numpy())) for k, v in tensors.items()}


def cache_is_valid(path: Path, entry: CatalogEntry, tag: dict[str, str]) -> bool:
    """The cache file is whole, from this npz, of the catalog's shapes, and its bytes check out."""
    shapes = expected_shapes(entry)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > min(size - 8, 1 << 24):
                return False
            header = json.loads(f.read(n))
            meta = header.pop("__metadata__")
            if sorted(header) != sorted(PARAM_NAMES):
                return False
            if any(meta.get(key) != value for key, value in tag.items()):
                return False
            spans = sorted((*header[k]["data_offsets"], k) for k in PARAM_NAMES)
            end = 0
            for begin, stop, name in spans:  # arrays tile the data section exactly, in order
                info = header[name]
                want = math.prod(shapes[name]) * 4
                if begin != end or stop - begin != want or info["dtype"] != "F32":
                    return False
                if tuple(info["shape"]) != shapes[name]:
                    return False
                end = stop
            if size != 8 + n + end:
                return False
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                with memoryview(mm)[8 + n :] as data:
                    return _crcs_match(data, spans, meta)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error):
        return False  # unreadable or malformed: rebuilt, never trusted


def _crcs_match(data: memoryview, spans: list, meta: dict[str, str]) -> bool:
    """Each array's CRC32 against the recorded one; arrays are checked on parallel threads
    (``zlib.crc32`` releases the GIL), largest first, which halves the check on two cores."""

    def matches(span: tuple[int, int, str]) -> bool:
        begin, stop, name = span
        with data[begin:stop] as view:
            return str(zlib.crc32(view)) == meta.get(f"crc32:{name}")

    largest_first = sorted(spans, key=lambda span: span[0] - span[1])
    with ThreadPoolExecutor(max_workers=min(len(spans), os.cpu_count() or 1)) as pool:
        return all(pool.map(matches, largest_first))


def write_cache(path: Path, tensors: dict[str, torch.Tensor], tag: dict[str, str]) -> None:
    """Write the safetensors copy, with ``tag`` and each array's CRC32 in its header, atomically."""
    from safetensors.torch import save_file

    meta = {**tag, **_crc_tag(tensors)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
