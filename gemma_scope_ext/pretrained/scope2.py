"""Gemma Scope 2 (Gemma 3): its folder names and its ``params.safetensors`` files, read with checks.

Repos ``google/gemma-scope-2-{size}-{pt|it}`` hold one folder per SAE,
``{kind}/layer_{L}_width_{W}_l0_{label}[_affine][_seed_{N}]`` with ``kind`` one of ``resid_post``,
``mlp_out``, ``attn_out``, ``transcoder`` (``*_all`` for the every-layer sweeps) and ``label`` one
of ``small``, ``medium``, ``big``; ``_affine`` marks a transcoder with a skip connection. Each folder
holds ``params.safetensors`` with ``w_enc`` [d_in, d_sae], ``w_dec`` [d_sae, d_out], ``b_enc``,
``b_dec``, ``threshold`` and, for ``_affine``, ``affine_skip_connection`` stored [d_in, d_out]
(SAELens's ``W_skip`` is its transpose, [d_out, d_in]: y = ... + x W_skip^T). Some folders also hold
a ``config.json``; nothing in it is needed, since the folder name says everything it says.

:func:`read_params_safetensors` opens the file by its header (safetensors has no pickle), refuses any
tensor name, dtype or shape the catalog does not expect, and returns the tensors under SAELens's names.
"""

from __future__ import annotations

import os
import re
from typing import Any, NamedTuple

from gemma_scope_ext.pretrained.catalog import WIDTHS, CatalogEntry, expected_shapes

__all__ = [
    "FILE_NAMES",
    "FOLDER_SITES",
    "Scope2Path",
    "parse_scope2_path",
    "read_params_safetensors",
]

FOLDER_SITES = {"resid_post": "res", "mlp_out": "mlp", "attn_out": "att", "transcoder": "transcoder"}
"""First part of a Gemma Scope 2 folder (without ``_all``) -> site."""

FILE_NAMES = {
    "w_enc": "W_enc", "w_dec": "W_dec", "b_enc": "b_enc", "b_dec": "b_dec",
    "threshold": "threshold", "affine_skip_connection": "W_skip",
}  # fmt: skip
"""Tensor name in ``params.safetensors`` -> SAELens parameter name."""

FILE_DTYPES = ("F32", "BF16", "F16")
"""Dtypes a released file may store (read as float32 unless another dtype is asked for)."""

_PATH = re.compile(
    r"^(resid_post|mlp_out|attn_out|transcoder)(_all)?/layer_(\d+)_width_([0-9a-z]+)"
    r"_l0_(small|medium|big)(_affine)?(?:_seed_(\d+))?$"
)


class Scope2Path(NamedTuple):
    """What a Gemma Scope 2 folder name says."""

    site: str
    """``res``, ``mlp``, ``att`` or ``transcoder``."""
    all_layers: bool
    """True for the every-layer sweeps (``resid_post_all/...``)."""
    layer: int
    """Block index."""
    width_label: str
    """``16k``, ``65k``, ``262k`` or ``1m``."""
    l0_label: str
    """``small``, ``medium`` or ``big``."""
    skip: bool
    """True for a transcoder with an affine skip connection (``_affine``)."""
    seed: int | None
    """The training seed of a repeated run (``_seed_N``), else None."""


def parse_scope2_path(path: str) -> Scope2Path:
    """Parse ``transcoder/layer_13_width_16k_l0_big_affine`` and the like."""
    m = _PATH.match(path)
    if m is None or m.group(4) not in WIDTHS or (m.group(6) and m.group(1) != "transcoder"):
        raise ValueError(
            f"not a Gemma Scope 2 folder: {path!r}; expected {{kind}}/layer_{{L}}_width_{{W}}_l0_"
            f"{{small|medium|big}}[_affine][_seed_{{N}}] with kind in {', '.join(FOLDER_SITES)} "
            f"(or kind_all), W in {', '.join(WIDTHS)} and _affine only on transcoders"
        )
    folder, every, layer, width, label, affine, seed = m.groups()
    return Scope2Path(FOLDER_SITES[folder], bool(every), int(layer), width, label, bool(affine),
                      None if seed is None else int(seed))  # fmt: skip


def _file_shapes(entry: CatalogEntry) -> dict[str, tuple[int, ...]]:
    """Expected name -> shape in the file (the skip connection stored [d_in, d_out])."""
    by_sae_lens = {v: k for k, v in FILE_NAMES.items()}
    shapes = {by_sae_lens[k]: v for k, v in expected_shapes(entry).items()}
    if "affine_skip_connection" in shapes:
        shapes["affine_skip_connection"] = shapes["affine_skip_connection"][::-1]
    return shapes


def read_params_safetensors(
    path: str | os.PathLike, entry: CatalogEntry, dtype: Any = None
) -> dict[str, Any]:
    """``entry``'s weights under SAELens's names (``W_skip`` transposed to [d_out, d_in]).

    Raises ``ValueError`` naming what is wrong if the file holds other tensors, other shapes or a
    non-float dtype. Tensors are read one by one and returned as ``dtype`` (default float32).
    """
    import torch
    from safetensors import SafetensorError, safe_open

    dtype = torch.float32 if dtype is None else dtype
    expected = _file_shapes(entry)
    what = f"{entry.release} {entry.sae_id} ({entry.model}, site {entry.site}, d_sae {entry.width})"
    try:
        with safe_open(str(path), framework="pt") as f:
            names = sorted(f.keys())
            if names != sorted(expected):
                raise ValueError(
                    f"{path} holds tensors {names}; expected {sorted(expected)} for {what}: the "
                    "file is not this SAE's, or is damaged; download it again with --force"
                )
            out = {}
            for name, shape in expected.items():
                sl = f.get_slice(name)
                got_dtype, got_shape = sl.get_dtype(), tuple(sl.get_shape())
                if got_dtype not in FILE_DTYPES or got_shape != shape:
                    raise ValueError(
                        f"{path}: {name} is {got_dtype} {got_shape}; expected a float "
                        f"({'/'.join(FILE_DTYPES)}) tensor of shape {shape} for {what}"
                    )
                out[FILE_NAMES[name]] = f.get_tensor(name).to(dtype)
    except SafetensorError as err:
        raise ValueError(
            f"cannot read {path}: {err}; the file is damaged or truncated: download it again "
            f"(gemma-scope download {entry.release} {entry.sae_id} --force)"
        ) from err
    if "W_skip" in out:
        out["W_skip"] = out["W_skip"].T.contiguous()
    return out
