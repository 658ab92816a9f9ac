"""Loading a released Gemma Scope SAE or transcoder by ``(release, sae_id)``.

``from_pretrained`` downloads ``params.npz`` with ``huggingface_hub`` (the usual Hugging Face cache,
HF_HUB_OFFLINE and a revision are honoured, read from the environment at call time), reads it
without pickle, checks every array's name, dtype and shape against the catalog and the model spec,
and builds the SAE with SAELens metadata (hook, model, context size 1024, BOS, Neuronpedia id).

The first load converts the npz into ``params.safetensors`` under :func:`cache_root` (HF-style
layout: ``models--google--{repo}/{commit}/{path}/``), written to a temporary file and moved into
place with ``os.replace``; later loads memory-map it (copy-on-write), which skips the zip
decoding. A cache file is trusted only if its header parses, its arrays have the expected names,
dtypes and shapes and tile the file exactly, it records the size and mtime of the npz it came from,
and each array's CRC32 matches the one recorded at write time; anything else is rebuilt. Weights are cached as released; the embedding SAEs'
rescaling for TransformerLens's ``hook_embed`` happens when the SAE is built.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
import tempfile
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sae_lens.saes.sae import SAE, SAEMetadata

from gemma_scope_ext.catalog import CatalogEntry, get_entry
from gemma_scope_ext.models import get_spec
from gemma_scope_ext.sae import PARAM_NAMES, rescale_for_hook_embed

__all__ = [
    "PARAM_NAMES",
    "ParamsFileError",
    "build_sae",
    "cache_path",
    "cache_root",
    "download_params",
    "expected_shapes",
    "from_pretrained",
    "load_params",
    "read_params_npz",
]


CONTEXT_SIZE = 1024
"""Gemma Scope trained on sequences of 1024 tokens, BOS included."""

_CACHE_FORMAT = "gemma_scope_ext.params/1"
_PROGRESS_BYTES = 1 << 30  # files this big take tens of seconds to decode: show progress


class ParamsFileError(ValueError):
    """A params.npz (or cached copy) whose contents are not what the catalog says they must be."""


def expected_shapes(entry: CatalogEntry) -> dict[str, tuple[int, ...]]:
    """Shape of each array in ``entry``'s params.npz, from the catalog width and the model spec."""
    d_in, d_out, d_sae = entry.d_in, entry.d_out, entry.width
    return {
        "W_enc": (d_in, d_sae),
        "W_dec": (d_sae, d_out),
        "b_enc": (d_sae,),
        "b_dec": (d_out,),
        "threshold": (d_sae,),
    }


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hf_home() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(os.path.expanduser(os.environ.get("HF_HOME", str(default))))


def _hub_cache() -> str:
    # huggingface_hub reads these once at import; reading them here honours later changes.
    legacy = os.environ.get("HUGGINGFACE_HUB_CACHE", str(_hf_home() / "hub"))
    return os.path.expanduser(os.environ.get("HF_HUB_CACHE", legacy))


def cache_root() -> Path:
    """Where converted weights live: GEMMA_SCOPE_CACHE, else ``$HF_HOME/gemma_scope``."""
    if os.environ.get("GEMMA_SCOPE_CACHE"):
        return Path(os.path.expanduser(os.environ["GEMMA_SCOPE_CACHE"]))
    return _hf_home() / "gemma_scope"


def download_params(
    entry: CatalogEntry, revision: str | None = None, force_download: bool = False
) -> Path:
    """Local path of ``entry``'s params.npz, downloaded into the Hugging Face cache if needed."""
    from huggingface_hub import constants, hf_hub_download

    offline = _env_true("HF_HUB_OFFLINE") or constants.HF_HUB_OFFLINE
    try:
        path = hf_hub_download(
            entry.repo_id,
            entry.filename,
            revision=revision,
            cache_dir=_hub_cache(),
            local_files_only=offline,
            force_download=force_download,
        )
    except FileNotFoundError as err:  # huggingface_hub's LocalEntryNotFoundError
        where = f"{entry.repo_id}/{entry.filename} (revision {revision or 'main'})"
        raise FileNotFoundError(
            f"{where} is not in the Hugging Face cache at {_hub_cache()}"
            + (" and HF_HUB_OFFLINE is set" if offline else " and could not be downloaded")
            + f"; run `gemma-scope download {entry.release} {entry.sae_id}` with network access, "
            "or point HF_HUB_CACHE at a cache that holds it"
        ) from err
    return Path(path)


def read_params_npz(path: str | os.PathLike, entry: CatalogEntry) -> dict[str, np.ndarray]:
    """The arrays of a params.npz, read without pickle and checked against ``entry``."""
    from tqdm.auto import tqdm

    quiet = os.path.getsize(path) < _PROGRESS_BYTES
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = tqdm(npz.files, desc=f"reading {entry.sae_id}", unit="array", disable=quiet)
            arrays = {name: npz[name] for name in names}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise ParamsFileError(
            f"cannot read {path}: {type(err).__name__}: {err}; the file is damaged or truncated: "
            f"download it again (gemma-scope download {entry.release} {entry.sae_id} --force)"
        ) from err
    check_params(arrays, entry, str(path))
    return arrays


def check_params(arrays: dict[str, Any], entry: CatalogEntry, where: str) -> None:
    """Raise :class:`ParamsFileError` unless ``arrays`` has exactly the expected float32 arrays."""
    if sorted(arrays) != sorted(PARAM_NAMES):
        raise ParamsFileError(
            f"{where} holds arrays {sorted(arrays)}; expected {sorted(PARAM_NAMES)} for "
            f"{entry.release} {entry.sae_id}"
        )
    for name, shape in expected_shapes(entry).items():
        got = arrays[name]
        dtype = str(got.dtype).removeprefix("torch.")
        if tuple(got.shape) != shape or dtype != "float32":
            raise ParamsFileError(
                f"{where}: {name} is {dtype} {tuple(got.shape)}; expected float32 {shape} for "
                f"{entry.release} {entry.sae_id} ({entry.model}, site {entry.site}, "
                f"d_in {entry.d_in}, d_sae {entry.width})"
            )


def cache_path(entry: CatalogEntry, npz_path: str | os.PathLike) -> Path:
    """Where the safetensors copy of ``npz_path`` lives, keyed by the snapshot's commit."""
    snapshot = Path(npz_path).parents[len(Path(entry.filename).parts) - 1]
    commit = snapshot.name if snapshot.parent.name == "snapshots" else "local"
    repo_folder = "models--" + entry.repo_id.replace("/", "--")
    return cache_root() / repo_folder / commit / entry.path / "params.safetensors"


def _source_tag(npz_path: Path) -> dict[str, str]:
    st = npz_path.stat()
    return {
        "format": _CACHE_FORMAT,
        "source_size": str(st.st_size),
        "source_mtime_ns": str(st.st_mtime_ns),
    }


def _crc_tag(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """CRC32 of each tensor's bytes (46 ms for 302 MB): bit rot in a cache file is caught."""
    return {f"crc32:{k}": str(zlib.crc32(v.contiguous().numpy())) for k, v in tensors.items()}


def _cache_is_valid(path: Path, entry: CatalogEntry, tag: dict[str, str]) -> bool:
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


def _write_cache(path: Path, tensors: dict[str, torch.Tensor], tag: dict[str, str]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".params-", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={**tag, **_crc_tag(tensors)})
        with open(tmp, "rb") as f:  # on disk before it is renamed into place
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_params(
    entry: CatalogEntry, revision: str | None = None, force_download: bool = False
) -> dict[str, torch.Tensor]:
    """``entry``'s weights as released (float32, CPU), from the safetensors cache when valid."""
    from safetensors.torch import load_file

    npz_path = download_params(entry, revision=revision, force_download=force_download)
    cached = cache_path(entry, npz_path)
    tag = _source_tag(npz_path)
    if _cache_is_valid(cached, entry, tag):
        return load_file(cached)  # memory-mapped, copy-on-write
    tensors = {k: torch.from_numpy(v) for k, v in read_params_npz(npz_path, entry).items()}
    try:
        _write_cache(cached, tensors, tag)
    except OSError as err:
        warnings.warn(
            f"could not cache {npz_path} as {cached}: {err}; loads stay slow", stacklevel=2
        )
    return tensors


def _sae_classes(kind: str) -> tuple[type, type]:
    if kind == "transcoder":
        from gemma_scope_ext.transcoder import GemmaScopeTranscoder, GemmaScopeTranscoderConfig

        return GemmaScopeTranscoder, GemmaScopeTranscoderConfig
    from gemma_scope_ext.sae import GemmaScopeSAE, GemmaScopeSAEConfig

    return GemmaScopeSAE, GemmaScopeSAEConfig


def sae_config(entry: CatalogEntry, device: str = "cpu", dtype: str = "float32") -> Any:
    """The SAELens config (with metadata) of ``entry``'s SAE or transcoder."""
    _, config_cls = _sae_classes(entry.kind)
    meta: dict[str, Any] = dict(
        model_name=entry.model,
        hook_name=entry.hook_name,
        hook_head_index=None,
        context_size=CONTEXT_SIZE,
        prepend_bos=True,
        neuronpedia_id=entry.neuronpedia_id,
    )
    kwargs: dict[str, Any] = dict(d_in=entry.d_in, d_sae=entry.width, dtype=dtype, device=device)
    if entry.kind == "transcoder":
        meta["hook_name_out"] = entry.hook_name_out
        kwargs["d_out"] = entry.d_out
    # Released weights expect raw activations: nothing is subtracted or normalised on the way in.
    kwargs.update(apply_b_dec_to_input=False, normalize_activations="none")
    if entry.site == "att":
        kwargs["reshape_activations"] = "hook_z"  # [b, p, head, d_head] flattened head-major
    return config_cls(**kwargs, metadata=SAEMetadata(**meta))


def hook_ready_params(
    entry: CatalogEntry, params: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Weights as the SAE uses them on its TransformerLens hook (embedding SAEs rescaled)."""
    if entry.site != "embedding":
        return dict(params)
    return rescale_for_hook_embed(params, math.sqrt(get_spec(entry.model).d_model))


def build_sae(
    entry: CatalogEntry,
    params: dict[str, torch.Tensor],
    device: str = "cpu",
    dtype: str = "float32",
) -> SAE:
    """The SAE (or transcoder) for ``entry`` holding ``params`` (the weights as released)."""
    from sae_lens.util import str_to_dtype

    check_params(params, entry, f"weights for {entry.release} {entry.sae_id}")
    sae_cls, _ = _sae_classes(entry.kind)
    # Build on the meta device and assign the loaded tensors: no random init, no extra copy.
    cfg = sae_config(entry, device="meta", dtype=dtype)
    sae = sae_cls(cfg)
    sae.cfg.device = device
    sae.load_state_dict(hook_ready_params(entry, params), assign=True)
    return sae.to(dtype=str_to_dtype(dtype), device=device)


def from_pretrained(
    release: str,
    sae_id: str,
    device: str = "cpu",
    dtype: str = "float32",
    revision: str | None = None,
    force_download: bool = False,
) -> SAE:
    """Load a released Gemma Scope SAE (or transcoder) by release and id.

    >>> sae = from_pretrained("gemma-scope-2b-pt-res-canonical", "layer_20/width_16k/canonical")
    """
    entry = get_entry(release, sae_id)
    params = load_params(entry, revision=revision, force_download=force_download)
    return build_sae(entry, params, device=device, dtype=dtype)
