"""A hook point on each MLP's input: ``blocks.{L}.mlp.hook_in``, what Gemma Scope 2's transcoders read.

Gemma Scope 2 trained its transcoders on Gemma 3's ``pre_feedforward_layernorm`` output: the RMSNorm
*with* its gain, exactly what the MLP receives. A ``HookedTransformer`` has no hook on that value
(``ln2.hook_normalized`` is before the gain, ``hook_mlp_in`` is the residual before the norm and fires
only with ``use_hook_mlp_in``). TransformerBridge, SAELens's ``HookedSAETransformer`` and
circuit-tracer all name it ``blocks.{L}.mlp.hook_in``; :func:`add_mlp_input_hooks` gives a
``HookedTransformer`` the same hook, and the Gemma 3 loader calls it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MLP_INPUT_HOOK", "add_mlp_input_hooks", "check_hook_present"]

MLP_INPUT_HOOK = "blocks.{layer}.mlp.hook_in"
"""The hook on the input of block ``layer``'s MLP (after ln2 and its gain), [batch, pos, d_model]."""


def _through_hook_in(mlp: Any, args: tuple) -> tuple:
    """Forward pre-hook: the MLP's input passes through its ``hook_in``, whose hooks may edit it."""
    return (mlp.hook_in(args[0]), *args[1:])


def add_mlp_input_hooks(model: Any) -> Any:
    """Give every block's MLP a ``hook_in`` HookPoint on its input (``blocks.{L}.mlp.hook_in``).

    For a ``HookedTransformer`` loaded elsewhere (``HookedTransformer.from_pretrained``); the
    package's own loaders do it already. Idempotent, and a no-op where the hook exists (a
    TransformerBridge, SAELens's ``HookedSAETransformer``). Returns ``model``.
    """
    from transformer_lens.hook_points import HookPoint

    if _has_all(model):
        return model
    for block in model.blocks:
        mlp = block.mlp
        if hasattr(mlp, "hook_in"):
            continue
        mlp.hook_in = HookPoint()  # [batch, pos, d_model]
        mlp.register_forward_pre_hook(_through_hook_in)
    model.setup()  # HookedRootModule's hook_dict and mod_dict learn the new names
    return model


def _has_all(model: Any) -> bool:
    hooks = getattr(model, "hook_dict", {})
    return all(MLP_INPUT_HOOK.format(layer=i) in hooks for i in range(model.cfg.n_layers))


def check_hook_present(model: Any, name: str) -> None:
    """Raise if ``name`` is an MLP-input hook that ``model`` lacks, naming the helper that adds it."""
    hooks = getattr(model, "hook_dict", None)
    if hooks is None or not name.endswith(".mlp.hook_in") or name in hooks:
        return
    raise ValueError(
        f"{type(model).__name__} has no hook {name!r}: Gemma Scope 2's transcoders read the MLP's "
        "input after the pre-MLP RMSNorm and its gain, which only that added hook carries. Load the "
        "model with gemma_scope_ext.load_model(...) or call gemma_scope_ext.add_mlp_input_hooks(model)"
    )
