"""TransformerLens's two model kinds, HookedTransformer and TransformerBridge, behind one interface.

Both expose Gemma Scope's hooks under the same names with the same values, but they differ in
five ways that matter here, and only this module knows it:

- A bridge hook's ``.name`` is its internal name (``blocks.L.hook_mlp_out`` reports
  ``blocks.L.ln2_post.hook_out``), so a hook function must not key results by ``hook.name``: bind
  the name the caller asked for instead (:func:`hooks_by_name` does).
- Swapping a hook point needs ``setup()`` on a HookedTransformer; the bridge has none, so the
  point goes where its internal name says and the registry and aliases are updated by hand
  (:func:`replace_hook_points`).
- The bridge's forward refuses ``start_at_layer`` (Hugging Face owns the layer loop):
  :func:`run_from_block` runs the whole forward there, with the same result.
- A HookedTransformer holds Gemma's RMSNorm gain as ``1 + w`` in ``norm.w``; a bridge holds the
  raw ``w`` and says so with ``cfg.rmsnorm_uses_offset`` (:func:`norm_gain` gives the gain).
- On the bridge ``blocks.L.hook_resid_mid`` is ``ln2.hook_in``, which feeds only the pre-MLP norm:
  an edit there never reaches the residual stream, so writing to it is refused
  (:func:`check_writable`).

TransformerLens 4 keeps only the bridge; what 3.9's HookedTransformer needs is in ``hooked.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import torch

from gemma_scope_ext.models import hooked

__all__ = [
    "MODEL_KINDS",
    "bridge_from_hf",
    "bridge_from_pretrained",
    "check_writable",
    "distinct_hooks",
    "hooks_by_name",
    "is_bridge",
    "norm_gain",
    "replace_hook_points",
    "restore_hook_points",
    "run_from_block",
]

MODEL_KINDS = ("hooked", "bridge")
"""The model kinds every entry point accepts: HookedTransformer and TransformerBridge."""

# Bridge aliases whose point sits off the residual stream: (pattern, what it really is).
_BRIDGE_READ_ONLY = (
    (re.compile(r"blocks\.\d+\.hook_resid_mid"),
     "the pre-MLP norm's input (ln2.hook_in), which feeds only that norm"),
)  # fmt: skip


def is_bridge(model: Any) -> bool:
    """Whether ``model`` is a TransformerLens ``TransformerBridge``."""
    from transformer_lens.model_bridge import TransformerBridge

    return isinstance(model, TransformerBridge)


def bridge_from_hf(hf_model: Any, tokenizer: Any, name_or_path: str, device: str = "cpu",
                   model_name: str | None = None):
    """Boot a ``TransformerBridge`` around a loaded HF model: raw weights, no compatibility mode.

    Compatibility mode is never turned on: it folds each norm's gain into the next weights, which
    moves the activations after a gain (``blocks.L.mlp.hook_in``, and ``unembed.hook_in``, which
    the attribution graph reads) away from the HookedTransformer's raw ones.
    """
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(
        name_or_path, hf_model=hf_model.to(device), tokenizer=tokenizer, device=device,
        dtype=next(hf_model.parameters()).dtype,
    )  # fmt: skip
    if model_name is not None:  # the short name HookedTransformer reports, not the folder
        bridge.cfg.model_name = model_name
    return bridge.eval()


def bridge_from_pretrained(hf_name: str, device: str, dtype: torch.dtype, model_name: str,
                           **kwargs: Any):
    """A released model as a ``TransformerBridge`` from the hub or its local cache.

    ``first_n_layers=k`` keeps the first k blocks, as ``HookedTransformer.from_pretrained`` does;
    ``cfg.model_name`` is ``model_name`` (``gemma-2-2b``), as a HookedTransformer's is.
    """
    from transformer_lens.model_bridge import TransformerBridge

    if (n := kwargs.pop("first_n_layers", None)) is not None:
        kwargs.setdefault("hf_config_overrides", {})["num_hidden_layers"] = n
    bridge = TransformerBridge.boot_transformers(hf_name, device=device, dtype=dtype, **kwargs)
    bridge.cfg.model_name = model_name
    return bridge.eval()


def norm_gain(model: Any, norm: Any) -> torch.Tensor | None:
    """The gain an RMSNorm module multiplies by (Gemma's ``1 + w``), or None if it has none."""
    w = getattr(norm, "w", None)
    if w is None:
        return None
    if is_bridge(model) and getattr(model.cfg, "rmsnorm_uses_offset", False):
        return w + 1.0  # the bridge keeps the Hugging Face weight w; the norm applies 1 + w
    return w


def check_writable(model: Any, name: str) -> None:
    """Raise if an edit at hook ``name`` would not reach the rest of the forward pass."""
    if not is_bridge(model):
        return
    for pattern, what in _BRIDGE_READ_ONLY:
        if pattern.fullmatch(name):
            raise ValueError(
                f"cannot write to {name!r} on a TransformerBridge: there it is {what}, so an "
                "edit would not reach the residual stream. Write at the previous hook_attn_out "
                "or read it only (or use a HookedTransformer)"
            )


def hooks_by_name(names: Iterable[str], fn: Callable[..., Any]) -> list[tuple[str, Callable]]:
    """``(name, hook)`` pairs whose hook calls ``fn(act, hook, name)`` with the name asked for."""

    def bind(name: str) -> Callable:
        return lambda act, hook: fn(act, hook, name)

    return [(n, bind(n)) for n in names]


def distinct_hooks(model: Any, names: Iterable[str]) -> list[str]:
    """``names`` with every name after the first that reaches the same HookPoint left out.

    A bridge's ``hook_dict`` holds both the HookedTransformer names and the internal ones, so a
    hook added under both would run twice.
    """
    seen: set[int] = set()
    kept = []
    hook_dict = model.hook_dict
    for name in names:
        if id(hook_dict[name]) not in seen:
            seen.add(id(hook_dict[name]))
            kept.append(name)
    return kept


def replace_hook_points(model: Any, points: dict[str, Any]) -> dict[str, Any]:
    """Put each new HookPoint where hook ``name`` is; returns the originals for the restore.

    A new point's child HookPoints join the model's ``hook_dict`` as ``<name>.<child>``.
    """
    originals = {name: model.hook_dict[name] for name in points}
    if not is_bridge(model):
        for name, point in points.items():
            hooked.set_hook_module(model, name, point)
        model.setup()
        return originals
    for name, point in points.items():
        _bridge_swap(model, name, originals[name], point)
        for child, sub in point.named_modules(prefix=name):
            if sub is not point:
                sub.name = child
                model._hook_registry[child] = sub
    return originals


def restore_hook_points(model: Any, originals: dict[str, Any]) -> None:
    """Undo :func:`replace_hook_points`."""
    if not is_bridge(model):
        for name, point in originals.items():
            hooked.set_hook_module(model, name, point)
        model.setup()
        return
    for name, point in originals.items():
        current = model.hook_dict[name]
        for child, sub in current.named_modules(prefix=name):
            if sub is not current:
                model._hook_registry.pop(child, None)
        _bridge_swap(model, name, current, point)


def _bridge_swap(model: Any, alias: str, old: Any, new: Any) -> None:
    real = old.name  # the internal name, which is also the module path
    parent, last = _parent(model, real)
    setattr(parent, last, new)
    new.name = real
    model._hook_registry[real] = new
    # Components keep their aliases (blocks.L.hook_mlp_out) as plain attributes to the point.
    parent, last = _parent(model, alias)
    if parent is not None and parent.__dict__.get(last) is old:
        object.__setattr__(parent, last, new)


def _parent(model: Any, path: str) -> tuple[Any, str]:
    *parents, last = path.split(".")
    obj = model
    for part in parents:
        obj = getattr(obj, part, None) if not part.isdigit() else obj[int(part)]
        if obj is None:
            return None, last
    return obj, last


def run_from_block(model: Any, tokens: torch.Tensor, resid_pre: Any, layer: int,
                   fwd_hooks: list) -> torch.Tensor:
    """Logits of ``tokens`` with ``fwd_hooks``, resuming at block ``layer`` where the model can.

    ``resid_pre()`` gives the clean residual entering that block; a HookedTransformer resumes there
    (everything before is unchanged), a bridge runs the whole forward, which gives the same logits.
    """
    if is_bridge(model):
        return model.run_with_hooks(tokens, return_type="logits", fwd_hooks=fwd_hooks)
    mask = None
    if model.tokenizer is not None and model.tokenizer.padding_side == "left":
        mask = hooked.attention_mask(model, tokens)
    return model.run_with_hooks(
        resid_pre(), start_at_layer=layer, tokens=tokens, attention_mask=mask,
        return_type="logits", fwd_hooks=fwd_hooks,
    )  # fmt: skip
