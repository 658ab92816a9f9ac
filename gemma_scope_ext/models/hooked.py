"""Everything TransformerLens 3.9's ``HookedTransformer`` needs that TransformerLens 4 removed.

TransformerLens 4.0 removed ``HookedTransformer``, ``HookedTransformerConfig``,
``transformer_lens.utils``, ``loading_from_pretrained`` and ``pretrained.weight_conversions``; its
only model class is ``TransformerBridge``. This is the one module that imports those paths
(``tests/test_imports.py`` fails on any other), so moving to TransformerLens 4 means deleting it
and the HookedTransformer branch of ``models/backend.py``, nothing else. Every import is inside the
function that needs it: importing this module under TransformerLens 4 works, calling it does not.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "attention_mask",
    "build_hooked",
    "convert_gemma_weights",
    "from_pretrained_no_processing",
    "hooked_config",
    "set_hook_module",
]


def hooked_config(base_model: str, **overrides: Any):
    """TransformerLens's hard-coded ``HookedTransformerConfig`` of ``base_model``, overridden."""
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import convert_hf_model_config

    cfg = convert_hf_model_config(base_model)
    cfg.update(overrides)
    return HookedTransformerConfig(**cfg)


def convert_gemma_weights(hf_model: Any, cfg: Any) -> dict:
    """TransformerLens's Gemma weight conversion (W_E times sqrt(d_model), 1 added to norms)."""
    from transformer_lens.pretrained.weight_conversions.gemma import (
        convert_gemma_weights as convert,
    )

    return convert(hf_model, cfg)


def build_hooked(cfg: Any, state_dict: dict, tokenizer: Any, device: str):
    """A ``HookedTransformer`` holding ``state_dict`` unprocessed: nothing folded or centred."""
    from transformer_lens import HookedTransformer

    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    return model.to(device, print_details=False).eval()


def from_pretrained_no_processing(hf_name: str, device: str, dtype: torch.dtype, **kwargs: Any):
    """A released model as an unprocessed ``HookedTransformer`` from the hub or its cache."""
    from transformer_lens import HookedTransformer

    return HookedTransformer.from_pretrained_no_processing(
        hf_name, device=device, dtype=dtype, **kwargs
    )


def attention_mask(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """The mask TransformerLens builds for left-padded ``tokens``."""
    from transformer_lens import utils

    return utils.get_attention_mask(model.tokenizer, tokens, model.cfg.default_prepend_bos)


def set_hook_module(model: Any, name: str, point: Any) -> None:
    """Put ``point`` at the module path ``name`` (a HookedTransformer's hook names are paths)."""
    *parents, last = name.split(".")
    obj = model
    for part in parents:
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    setattr(obj, last, point)
