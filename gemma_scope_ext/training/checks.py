"""Settings a training run is checked against before any model or activation work.

A run that cannot succeed (no tokens, an empty batch, sequences the model cannot hold, a buffer that
never fills a batch, a learning rate no optimiser step survives, a hook the model lacks, an output
folder that cannot be written or already holds a saved SAE) fails here, in a second, with what was
expected, instead of after hours of training.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from gemma_scope_ext.models.spec import ModelSpec
from gemma_scope_ext.saes.saving import holds_saved_sae

__all__ = [
    "MAX_LR",
    "check_against_model",
    "check_output_folder",
    "check_run_settings",
]

MAX_LR = 1.0
"""Largest learning rate accepted. Adam moves every weight by about ``lr`` per step whatever the
gradient's size; the decoder rows have unit norm, so a step of more than 1 replaces them outright."""

_LAYER = re.compile(r"^blocks\.(\d+)\.")


def check_output_folder(path: str | os.PathLike, overwrite: bool, what: str = "output_path") -> Path:
    """Refuse a folder that is a file, cannot be written, or holds a saved SAE (unless ``overwrite``).

    Nothing is created: the nearest existing folder on the way is probed with a temporary file.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is an existing file; expected a folder (or nothing there)")
    if path.is_dir() and holds_saved_sae(path) and not overwrite:
        raise FileExistsError(
            f"{what} {path} already holds a saved SAE; choose another folder, or pass "
            "overwrite=True (--overwrite on the command line) to replace it"
        )
    probe_dir = path
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise ValueError(
            f"{what} {path} cannot be created: {probe_dir} is a file; expected a folder path"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(
            f"cannot write to {what} {path} ({type(err).__name__}: {err.strerror or err}); "
            "choose a folder you can write to"
        ) from err
    return path


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


def _check_hook_layer(hook: str, spec: ModelSpec, what: str) -> None:
    match = _LAYER.match(hook)
    if match and int(match.group(1)) >= spec.n_layers:
        raise ValueError(
            f"{what} {hook!r} names layer {match.group(1)}, but {spec.name} has layers "
            f"0..{spec.n_layers - 1}"
        )


def check_run_settings(
    settings: dict[str, Any], spec: ModelSpec | None, overwrite: bool = False
) -> None:
    """Check a runner's settings (field name -> value) for ``spec``'s model; raise on the first
    impossible one. Settings that are absent are not checked, nor, without a spec, the context
    size and layers (``check_against_model`` checks them on the loaded model)."""
    tokens = settings.get("training_tokens")
    batch = settings.get("train_batch_size_tokens")
    for name in ("training_tokens", "train_batch_size_tokens", "context_size",
                 "n_batches_in_buffer", "store_batch_size_prompts"):  # fmt: skip
        if name in settings:
            _check_positive_int(name, settings[name])
    if tokens is not None and batch is not None and tokens < batch:
        raise ValueError(
            f"training_tokens={tokens:,} is less than one batch (train_batch_size_tokens="
            f"{batch:,}); expected at least one full batch of tokens"
        )
    context = settings.get("context_size")
    if spec is not None and context is not None and context > spec.n_ctx:
        raise ValueError(
            f"context_size={context} is longer than {spec.name} can hold (n_ctx={spec.n_ctx}); "
            f"expected 1..{spec.n_ctx}"
        )
    n_buffer = settings.get("n_batches_in_buffer")
    if context is not None and n_buffer is not None and batch is not None:
        seqpos = settings.get("seqpos_slice") or (None,)
        kept = len(range(context)[slice(*seqpos)])
        if n_buffer * kept < batch:
            raise ValueError(
                f"the activation buffer holds n_batches_in_buffer x context_size = {n_buffer} x "
                f"{kept} = {n_buffer * kept:,} tokens, fewer than one training batch "
                f"(train_batch_size_tokens={batch:,}); raise n_batches_in_buffer to at least "
                f"{math.ceil(batch / kept)}"
            )
    lr = settings.get("lr")
    if lr is not None and not (isinstance(lr, int | float) and 0 < lr <= MAX_LR):
        raise ValueError(
            f"lr must be a finite number in (0, {MAX_LR}], got {lr!r} (Gemma Scope used 7e-5; "
            "Adam moves each weight by about lr per step)"
        )
    for field in ("hook_name", "hook_name_out"):
        if spec is not None and settings.get(field):
            _check_hook_layer(settings[field], spec, field)
    if settings.get("output_path") is not None:
        check_output_folder(settings["output_path"], overwrite)


def check_against_model(model: Any, hooks: dict[str, int], context_size: int) -> None:
    """Check hook names, widths and the sequence length against a loaded TransformerLens model.

    ``hooks`` maps each hook the run reads to the width the SAE expects there. Runs the model on
    a single BOS-only row (one token) to read the widths.
    """
    import torch

    missing = [h for h in hooks if h not in model.hook_dict]
    if missing:
        n_layers = model.cfg.n_layers
        raise ValueError(
            f"the model has no hook {missing[0]!r} (it has {n_layers} layers, 0..{n_layers - 1}); "
            "expected a TransformerLens hook name such as 'blocks.0.hook_resid_post'"
        )
    if context_size > model.cfg.n_ctx:
        raise ValueError(
            f"context_size={context_size} is longer than the model can hold "
            f"(n_ctx={model.cfg.n_ctx}); expected 1..{model.cfg.n_ctx}"
        )
    with torch.no_grad():
        _, cache = model.run_with_cache(
            torch.zeros(1, 1, dtype=torch.long, device=model.cfg.device),
            names_filter=list(hooks),
        )
    for hook, width in hooks.items():
        act = cache[hook]
        actual = act.shape[-2] * act.shape[-1] if hook.endswith("hook_z") else act.shape[-1]
        if actual != width:
            raise ValueError(
                f"{hook} has width {actual} on this model, but the SAE expects {width}; "
                "leave d_in/d_out to the config function, or train at a hook of that width"
            )
