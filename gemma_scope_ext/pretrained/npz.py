"""Reading a params.npz in place: each uncompressed member memory-mapped where it lies in the zip.

An ``.npz`` is a zip of ``.npy`` files, and ``np.savez`` stores them uncompressed (ZIP_STORED), as
Gemma Scope's files are (302 MB for 2304 x 16384 x 2 float32 matrices). A stored member's array is
found from the zip's central directory (the member's local header offset), its local header (whose
name and extra fields are skipped) and the ``.npy`` header (dtype, shape, C or Fortran order); the
array is then a copy-on-write memory map of those bytes: nothing is decoded, copied or cached, the
file is never written, and every process loading the same file shares its pages in the page cache.

Fortran-ordered members map as well; they are made C-contiguous in memory (one copy in RAM, none
on disk), since the SAE's kernels expect row-major weights. Pickled members are refused.

Hugging Face stores each LFS file as ``blobs/<sha256 of its bytes>``, the snapshot path being a
symlink to it, so :func:`verify_blob` can check a file's bytes exactly without a second copy.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gemma_scope_ext.files import sha256_file

__all__ = ["IntegrityError", "NpzMember", "all_stored", "map_npz", "npz_members", "verify_blob"]

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
_LOCAL_MAGIC = b"PK\x03\x04"


class IntegrityError(ValueError):
    """A file whose bytes are not the ones its name or structure promise."""


class NpzMember(NamedTuple):
    """Where one ``.npy`` member of a zip lies."""

    name: str
    """Array name (the member name without ``.npy``)."""
    stored: bool
    """True if the member is uncompressed (ZIP_STORED) and so can be memory-mapped."""
    header_offset: int
    """Offset of the member's local file header in the zip."""
    size: int
    """Uncompressed size of the ``.npy`` member in bytes."""


def npz_members(path: str | os.PathLike) -> list[NpzMember]:
    """The members of an npz, from its central directory; raises IntegrityError if unreadable."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise IntegrityError(f"not a readable zip: {type(err).__name__}: {err}") from err
    members = []
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise IntegrityError(f"member {info.filename!r} is not a .npy array")
        stored = info.compress_type == zipfile.ZIP_STORED and info.compress_size == info.file_size
        name = info.filename.removesuffix(".npy")
        members.append(NpzMember(name, stored, info.header_offset, info.file_size))
    return members


def all_stored(path: str | os.PathLike) -> bool:
    """Whether every member of the npz is uncompressed (so :func:`map_npz` needs no decoding)."""
    return all(m.stored for m in npz_members(path))


def _array_at(f, file_size: int, member: NpzMember) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """(dtype, shape, fortran_order, offset of the data) of a stored member, all checked."""
    f.seek(member.header_offset)
    raw = f.read(_LOCAL_HEADER.size)
    if len(raw) < _LOCAL_HEADER.size:
        raise IntegrityError(f"{member.name}: the zip ends inside its local header")
    magic, n_name, n_extra = _LOCAL_HEADER.unpack(raw)
    if magic != _LOCAL_MAGIC:
        raise IntegrityError(f"{member.name}: no local file header at offset {member.header_offset}")
    start = member.header_offset + _LOCAL_HEADER.size + n_name + n_extra
    f.seek(start)
    try:
        version = np.lib.format.read_magic(f)
        reader = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }[version]
        shape, fortran, dtype = reader(f)
    except (ValueError, KeyError, EOFError, SyntaxError) as err:
        raise IntegrityError(f"{member.name}: not a .npy header ({err})") from err
    if dtype.hasobject:
        raise IntegrityError(
            f"{member.name} is a pickled object array; refused (arrays are read with "
            "allow_pickle=False)"
        )
    offset = f.tell()
    n_bytes = math.prod(shape) * dtype.itemsize
    if offset - start + n_bytes != member.size:
        raise IntegrityError(
            f"{member.name}: the .npy header says {dtype} {shape} ({n_bytes} bytes) but the member "
            f"holds {member.size - (offset - start)} bytes of data"
        )
    if offset + n_bytes > file_size:
        raise IntegrityError(f"{member.name}: its data runs past the end of the file (truncated)")
    return dtype, shape, fortran, offset


def map_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an all-stored npz, memory-mapped copy-on-write (Fortran order made C)."""
    members = npz_members(path)
    compressed = [m.name for m in members if not m.stored]
    if compressed:
        raise ValueError(f"members {compressed} are compressed; they cannot be memory-mapped")
    arrays: dict[str, np.ndarray] = {}
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        for member in members:
            if member.name in arrays:
                raise IntegrityError(f"member {member.name!r} appears twice")
            dtype, shape, fortran, offset = _array_at(f, file_size, member)
            if math.prod(shape) == 0:
                arrays[member.name] = np.zeros(shape, dtype)  # mmap cannot map zero bytes
                continue
            order = "F" if fortran else "C"
            mapped = np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape, order=order)
            arrays[member.name] = np.ascontiguousarray(mapped) if fortran else mapped
    return arrays


def verify_blob(path: str | os.PathLike) -> str:
    """Check the file's sha256 against the Hugging Face blob name it resolves to; return the hash.

    Raises IntegrityError on a mismatch, ValueError if the file is not a Hugging Face blob (the
    hub stores LFS files as ``blobs/<sha256>``; a local copy carries no hash to check against).
    """
    blob = Path(path).resolve()
    name = blob.name
    if blob.parent.name != "blobs" or len(name) != 64 or any(c not in "0123456789abcdef" for c in name):
        raise ValueError(
            f"cannot verify {path}: it resolves to {blob}, not a Hugging Face blob named by its "
            "sha256 (blobs/<64 hex digits>)"
        )
    digest = sha256_file(blob)
    if digest != name:
        raise IntegrityError(
            f"{path}: sha256 of its bytes is {digest}, but Hugging Face stored it as {name}: the file "
            "changed after download"
        )
    return digest
