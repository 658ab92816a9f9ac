"""Loading a released Gemma Scope SAE or transcoder by ``(release, sae_id)``.

``from_pretrained`` downloads ``params.npz`` with ``huggingface_hub`` (the usual Hugging Face cache,
HF_HUB_OFFLINE and a revision are honoured, read from the environment at call time), reads it
without pickle, checks every array's name, dtype and shape against the catalog and the model spec,
and builds the SAE with SAELens metadata (hook, model, context size 1024, BOS, Neuronpedia id).

A params.npz whose members are stored uncompressed (as Gemma Scope's are) is memory-mapped in
place (``npz.py``): no decoding, no copy on disk. Only a compressed npz is converted, on its first
load, into a checked safetensors copy that later loads memory-map (``cache.py``); weights are cached
as released; the embedding SAEs' rescaling for TransformerLens's ``hook_embed``
happens when the SAE is built.

A Gemma Scope 2 id's ``params.safetensors`` is read by its header with every tensor name, dtype and
shape checked (``scope2.py``), and loads as the SAE, transcoder or skip transcoder its folder names,
on the hooks of ``gemma3_shapes.py``.
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from typing import Any

import numpy as np
import torch
from sae_lens.saes.sae import SAE, SAEMetadata

from gemma_scope_ext.models.families import get_spec
from gemma_scope_ext.pretrained.cache import (
    cache_is_valid,
    cache_path,
    conversion_lock,
    source_tag,
    write_cache,
)
from gemma_scope_ext.pretrained.catalog import CatalogEntry, expected_shapes, get_entry
from gemma_scope_ext.pretrained.hub import download_params
from gemma_scope_ext.pretrained.npz import IntegrityError, all_stored, map_npz, verify_blob
from gemma_scope_ext.pretrained.scope2 import read_params_safetensors
from gemma_scope_ext.saes.params import rescale_for_hook_embed
from gemma_scope_ext.saes.sae import GemmaScopeSAE, GemmaScopeSAEConfig
from gemma_scope_ext.saes.skip_transcoder import (
    GemmaScopeSkipTranscoder,
    GemmaScopeSkipTranscoderConfig,
)
from gemma_scope_ext.saes.transcoder import GemmaScopeTranscoder, GemmaScopeTranscoderConfig

__all__ = [
    "CONTEXT_SIZE",
    "ParamsFileError",
    "build_sae",
    "check_params",
    "from_pretrained",
    "hook_ready_params",
    "load_params",
    "read_params_npz",
    "sae_config",
]


CONTEXT_SIZE = 1024
"""Gemma Scope trained on sequences of 1024 tokens, BOS included."""

_PROGRESS_BYTES = 1 << 30  # files this big take tens of seconds to decode: show progress


class ParamsFileError(ValueError):
    """A params.npz (or cached copy) whose contents are not what the catalog says they must be."""


def read_params_npz(path: str | os.PathLike, entry: CatalogEntry) -> dict[str, np.ndarray]:
    """The arrays of a params.npz, read without pickle and checked against ``entry``."""
    from tqdm.auto import tqdm

    quiet = os.path.getsize(path) < _PROGRESS_BYTES
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = tqdm(npz.files, desc=f"reading {entry.sae_id}", unit="array", disable=quiet)
            arrays = {name: np.ascontiguousarray(npz[name]) for name in names}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise _damaged(path, entry, err) from err
    check_params(arrays, entry, str(path))
    return arrays


def check_params(arrays: dict[str, Any], entry: CatalogEntry, where: str) -> None:
    """Raise :class:`ParamsFileError` unless ``arrays`` has exactly the expected float32 arrays."""
    names = sorted(expected_shapes(entry))
    if sorted(arrays) != names:
        raise ParamsFileError(
            f"{where} holds arrays {sorted(arrays)}; expected {names} for "
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


def _damaged(path, entry: CatalogEntry, err: Exception) -> ParamsFileError:
    return ParamsFileError(
        f"cannot read {path}: {type(err).__name__}: {err}; the file is damaged or truncated: "
        f"download it again (gemma-scope download {entry.release} {entry.sae_id} --force)"
    )


def load_params(
    entry: CatalogEntry,
    revision: str | None = None,
    force_download: bool = False,
    verify: bool = False,
) -> dict[str, torch.Tensor]:
    """``entry``'s weights as released (float32, CPU).

    An uncompressed npz is memory-mapped in place; a compressed one is read through the checked
    safetensors cache; a Gemma Scope 2 ``params.safetensors`` is read directly, names, dtypes and
    shapes checked, a skip connection as ``W_skip`` [d_out, d_in]. ``verify`` first checks the file's sha256 against its Hugging Face blob name
    (reads the whole file once).
    """
    npz_path = download_params(entry, revision=revision, force_download=force_download)
    if entry.generation == 2:  # params.safetensors: read by its header, nothing to convert
        if verify:
            try:
                verify_blob(npz_path)
            except IntegrityError as err:
                raise _damaged(npz_path, entry, err) from err
        try:
            return read_params_safetensors(npz_path, entry)
        except ValueError as err:
            raise ParamsFileError(str(err)) from err
    try:
        if verify:
            verify_blob(npz_path)
        stored = all_stored(npz_path)
        arrays = map_npz(npz_path) if stored else None
    except IntegrityError as err:
        raise _damaged(npz_path, entry, err) from err
    if arrays is not None:
        check_params(arrays, entry, str(npz_path))
        return {k: torch.from_numpy(v) for k, v in arrays.items()}
    return _load_via_cache(entry, npz_path)


def _load_via_cache(entry: CatalogEntry, npz_path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    cached = cache_path(entry, npz_path)
    tag = source_tag(npz_path)
    if cache_is_valid(cached, entry, tag):
        return load_file(cached)  # memory-mapped, copy-on-write
    tensors = {k: torch.from_numpy(v) for k, v in read_params_npz(npz_path, entry).items()}
    try:
        with conversion_lock(cached.parent):
            if not cache_is_valid(cached, entry, tag):  # another process may have written it
                write_cache(cached, tensors, tag)
    except OSError as err:
        warnings.warn(
            f"could not cache {npz_path} as {cached}: {err}; loads stay slow", stacklevel=2
        )
    return tensors


def _sae_classes(entry: CatalogEntry) -> tuple[type, type]:
    if entry.skip:
        return GemmaScopeSkipTranscoder, GemmaScopeSkipTranscoderConfig
    if entry.kind == "transcoder":
        return GemmaScopeTranscoder, GemmaScopeTranscoderConfig
    return GemmaScopeSAE, GemmaScopeSAEConfig


def sae_config(entry: CatalogEntry, device: str = "cpu", dtype: str = "float32") -> Any:
    """The SAELens config (with metadata) of ``entry``'s SAE or transcoder."""
    _, config_cls = _sae_classes(entry)
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
    sae_cls, _ = _sae_classes(entry)
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
    verify: bool = False,
) -> SAE:
    """Load a released Gemma Scope SAE (or transcoder) by release and id.

    ``verify=True`` checks the file's sha256 against the name Hugging Face stored it under.

    >>> sae = from_pretrained("gemma-scope-2b-pt-res-canonical", "layer_20/width_16k/canonical")
    >>> tc = from_pretrained("gemma-scope-2-1b-pt-transcoders", "transcoder/layer_13_width_16k_l0_medium_affine")
    """
    entry = get_entry(release, sae_id)
    params = load_params(entry, revision=revision, force_download=force_download, verify=verify)
    return build_sae(entry, params, device=device, dtype=dtype)
