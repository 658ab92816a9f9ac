"""Registration of this package's SAE classes with SAELens.

SAELens has no entry-point discovery: architectures are found in its registry dicts, which
``register_sae_class`` and ``register_sae_training_class`` fill and which refuse a duplicate name.
Importing ``gemma_scope_ext`` calls ``register_with_sae_lens()`` once; calling it again is harmless.
"""

from __future__ import annotations

from typing import Any

__all__ = ["register_with_sae_lens"]


def _register(architecture: str, cls: Any, cfg_cls: Any, training: bool) -> None:
    from sae_lens import registry

    table = registry.SAE_TRAINING_CLASS_REGISTRY if training else registry.SAE_CLASS_REGISTRY
    if architecture in table:
        if table[architecture] == (cls, cfg_cls):
            return
        raise ValueError(
            f"SAELens already has a different class registered as {architecture!r}: "
            f"{table[architecture][0].__name__}; expected {cls.__name__}. Another package uses "
            "the same architecture name; rename one of them."
        )
    register = registry.register_sae_training_class if training else registry.register_sae_class
    register(architecture, cls, cfg_cls)


def register_with_sae_lens() -> None:
    """Register the Gemma Scope JumpReLU SAE (inference and training) with SAELens."""
    from gemma_scope_ext.sae import ARCHITECTURE, GemmaScopeSAE, GemmaScopeSAEConfig
    from gemma_scope_ext.sae_training import GemmaScopeTrainingSAE, GemmaScopeTrainingSAEConfig

    _register(ARCHITECTURE, GemmaScopeSAE, GemmaScopeSAEConfig, training=False)
    _register(ARCHITECTURE, GemmaScopeTrainingSAE, GemmaScopeTrainingSAEConfig, training=True)

    from gemma_scope_ext import transcoder as tc

    _register(tc.ARCHITECTURE, tc.GemmaScopeTranscoder, tc.GemmaScopeTranscoderConfig, False)
    _register(tc.ARCHITECTURE, tc.GemmaScopeTrainingTranscoder,
              tc.GemmaScopeTrainingTranscoderConfig, training=True)  # fmt: skip

    from gemma_scope_ext.sae_lens_route import register_sae_lens_route

    register_sae_lens_route()
