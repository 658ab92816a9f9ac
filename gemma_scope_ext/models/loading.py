"""Loading models as unprocessed TransformerLens models: embedded tiny ones and real ones.

Each loader gives a ``HookedTransformer`` by default and a ``TransformerBridge`` (TransformerLens
4's only model class) with ``as_bridge=True``; both carry the same hooks with the same values.

Gemma Scope's SAEs read raw activations, so nothing is folded or centred. Each family says how its
Hugging Face config and weights become TransformerLens's (``Family.tl_config`` and
``Family.convert_weights``); this module only dispatches on the family.

The tiny models (``tiny_gemma2()``, ``tiny_gemma3()``) are Hugging Face models with the real
architecture at toy size (Gemma 2: 4 layers, GQA, sliding window 16, soft caps,
query_pre_attn_scalar != head_dim; Gemma 3: 6 layers with global layers 2 and 5, qk-norm, two rope
bases and linear rope scaling on global layers, the same GQA, window and scalar), trained briefly on
Python standard-library docstrings by ``tools/make_tiny_gemma2.py`` and ``tools/make_tiny_gemma3.py``. They go
through TransformerLens's own weight conversion, exactly the code path real weights take.
"""

from __future__ import annotations

from typing import Any

import torch

from gemma_scope_ext.devices import resolve_device
from gemma_scope_ext.models import hooked
from gemma_scope_ext.models.backend import bridge_from_hf, bridge_from_pretrained
from gemma_scope_ext.models.families import family_of, get_family, get_spec, tiny_dir
from gemma_scope_ext.models.gemma2 import TINY_MODEL_NAME
from gemma_scope_ext.models.gemma3 import TINY_MODEL_NAME as TINY_GEMMA3

__all__ = [
    "hooked_from_hf",
    "load_gemma2",
    "load_gemma3",
    "load_model",
    "tiny_gemma2",
    "tiny_gemma2_hf",
    "tiny_gemma3",
    "tiny_gemma3_hf",
    "tiny_model",
    "tiny_model_hf",
    "tiny_tokenizer",
]


def tiny_tokenizer(name: str = TINY_MODEL_NAME):
    """A tiny model's Gemma-style tokenizer (pad 0, eos 1, bos 2, unk 3, byte fallback)."""
    from transformers import AutoTokenizer

    # name_or_path is the folder, so TransformerLens can re-open it with add_bos_token=True.
    return AutoTokenizer.from_pretrained(str(tiny_dir(name)))


def tiny_model_hf(name: str = TINY_MODEL_NAME, dtype: torch.dtype = torch.float32):
    """A tiny model as a Hugging Face causal LM (eager attention, for soft-capping)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    # A bar for a 3 MB local file is noise; the user's own setting comes back afterwards.
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(tiny_dir(name)), attn_implementation="eager", dtype=dtype
        )
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    return model.eval()


def hooked_from_hf(hf_model: Any, tokenizer: Any = None, *, dtype=torch.float32, device="cpu"):
    """Convert an HF model of a known family with TransformerLens's conversion, unprocessed.

    No LayerNorm folding or weight centring: activations are raw, as Gemma Scope saw them. The
    family finishes the model (Gemma 3: ``blocks.{L}.mlp.hook_in`` added).
    """
    # A model built from a config in memory has no architectures list until it is saved.
    family = family_of((hf_model.config.architectures or [type(hf_model).__name__])[0])
    cfg = family.tl_config(hf_model.config, dtype=dtype, device=device)
    model = hooked.build_hooked(cfg, family.convert_weights(hf_model, cfg), tokenizer, device)
    family.finish_model(model)
    return model


def tiny_model(
    name: str = TINY_MODEL_NAME,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    as_bridge: bool = False,
):
    """An embedded tiny model with its tokenizer; offline, ~1 s.

    A ``HookedTransformer``, or with ``as_bridge`` a ``TransformerBridge`` on the same weights.
    """
    hf = tiny_model_hf(name, dtype)
    if as_bridge:
        return bridge_from_hf(hf, tiny_tokenizer(name), str(tiny_dir(name)), str(device), name)
    return hooked_from_hf(hf, tiny_tokenizer(name), dtype=dtype, device=str(device))


def tiny_gemma2(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, as_bridge: bool = False
):
    """The embedded tiny Gemma 2 with its tokenizer (a bridge with ``as_bridge``); offline, ~1 s."""
    return tiny_model(TINY_MODEL_NAME, device, dtype, as_bridge)


def tiny_gemma2_hf(dtype: torch.dtype = torch.float32):
    """The tiny Gemma 2 as a Hugging Face ``Gemma2ForCausalLM`` (eager attention)."""
    return tiny_model_hf(TINY_MODEL_NAME, dtype)


def tiny_gemma3(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, as_bridge: bool = False
):
    """The embedded tiny Gemma 3 with its tokenizer (a bridge with ``as_bridge``); offline, ~1 s."""
    return tiny_model(TINY_GEMMA3, device, dtype, as_bridge)


def tiny_gemma3_hf(dtype: torch.dtype = torch.float32):
    """The tiny Gemma 3 as a Hugging Face ``Gemma3ForCausalLM`` (eager attention)."""
    return tiny_model_hf(TINY_GEMMA3, dtype)


def load_model(
    name: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    as_bridge: bool = False,
    **kwargs: Any,
):
    """A model of any known family as an unprocessed ``HookedTransformer`` (or bridge).

    ``name`` is a released model (``gemma-2-2b``, ``gemma-3-1b-pt``) or an embedded tiny one
    (``tiny-gemma2``, ``tiny-gemma3``). Weights
    come from the Hugging Face hub or its local cache; extra keyword arguments (e.g.
    ``first_n_layers``) go to TransformerLens. ``as_bridge`` boots a ``TransformerBridge`` instead,
    with raw weights (no compatibility mode, which would fold the norms Gemma Scope reads).
    """
    spec = get_spec(name)
    family = get_family(spec.family)
    tiny = spec.name == family.tiny_model
    device = resolve_device(device, default_cpu=tiny)
    if tiny:
        return tiny_model(spec.name, device, dtype, as_bridge)
    try:
        if as_bridge:
            return bridge_from_pretrained(spec.hf_name, device, dtype, spec.name, **kwargs)
        return family.load_pretrained(spec, device=device, dtype=dtype, **kwargs)
    except OSError as err:  # HF raises OSError subclasses when offline or unauthorised
        raise RuntimeError(
            f"could not load {spec.hf_name}: it is neither downloadable now nor in the Hugging Face "
            "cache. Gemma models are gated: accept the licence on huggingface.co, log in "
            f"(`hf auth login`) and run once online, or use the embedded {family.tiny_model} "
            f"offline. Cause: {type(err).__name__}: {err}"
        ) from err


def load_gemma2(
    name: str = "gemma-2-2b",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    as_bridge: bool = False,
    **kwargs: Any,
):
    """A Gemma 2 as an unprocessed ``HookedTransformer`` (``from_pretrained_no_processing``).

    ``name`` is a key of ``GEMMA2_MODELS`` or ``"tiny-gemma2"``; ``as_bridge=True`` gives a
    ``TransformerBridge``; see :func:`load_model`.
    """
    spec = get_spec(name)
    if spec.family != "gemma2":
        raise ValueError(f"{name!r} is a {spec.family} model, not Gemma 2; use load_model({name!r})")
    return load_model(name, device, dtype, as_bridge, **kwargs)


def load_gemma3(
    name: str = "gemma-3-1b-pt",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    as_bridge: bool = False,
    **kwargs: Any,
):
    """A Gemma 3 as an unprocessed ``HookedTransformer``, ready for Gemma Scope 2.

    ``name`` is a key of ``GEMMA3_MODELS`` or ``"tiny-gemma3"``; see :func:`load_model`. Two things
    differ from ``HookedTransformer.from_pretrained_no_processing``: attention is scaled by
    sqrt(query_pre_attn_scalar) (TransformerLens uses sqrt(d_head), wrong for 27b), and every MLP has
    the ``blocks.{L}.mlp.hook_in`` hook that Gemma Scope 2's transcoders read. ``as_bridge=True``
    gives a ``TransformerBridge`` (which has that hook and the right scale natively).
    """
    spec = get_spec(name)
    if spec.family != "gemma3":
        raise ValueError(f"{name!r} is a {spec.family} model, not Gemma 3; use load_model({name!r})")
    return load_model(name, device, dtype, as_bridge, **kwargs)
