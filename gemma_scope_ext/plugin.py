"""Registration of this package's SAE classes with SAELens.

SAELens has no entry-point discovery: architectures are found in its registry dicts, which
``register_sae_class`` and ``register_sae_training_class`` fill and which refuse a duplicate name.
Importing ``gemma_scope_ext`` calls ``register_with_sae_lens()`` once; calling it again is harmless.
"""

from __future__ import annotations

from typing import Any

from gemma_scope_ext.pretrained.sae_lens_route import register_sae_lens_route
from gemma_scope_ext.saes import sae, skip_transcoder, transcoder
from gemma_scope_ext.training.config import GemmaScopeTrainingSAEConfig
from gemma_scope_ext.training.sae import GemmaScopeTrainingSAE
from gemma_scope_ext.training.skip_transcoder import (
    GemmaScopeTrainingSkipTranscoder,
    GemmaScopeTrainingSkipTranscoderConfig,
)
from gemma_scope_ext.training.transcoder import (
    GemmaScopeTrainingTranscoder,
    GemmaScopeTrainingTranscoderConfig,
)

__all__ = ["ARCHITECTURES", "register_with_sae_lens"]

ARCHITECTURES = (
    (sae.ARCHITECTURE, (sae.GemmaScopeSAE, sae.GemmaScopeSAEConfig),
     (GemmaScopeTrainingSAE, GemmaScopeTrainingSAEConfig)),
    (transcoder.ARCHITECTURE, (transcoder.GemmaScopeTranscoder, transcoder.GemmaScopeTranscoderConfig),
     (GemmaScopeTrainingTranscoder, GemmaScopeTrainingTranscoderConfig)),
    (skip_transcoder.ARCHITECTURE,
     (skip_transcoder.GemmaScopeSkipTranscoder, skip_transcoder.GemmaScopeSkipTranscoderConfig),
     (GemmaScopeTrainingSkipTranscoder, GemmaScopeTrainingSkipTranscoderConfig)),
)  # fmt: skip
"""(SAELens architecture name, (inference class, config), (training class, config)) per class."""


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
    """Register the Gemma Scope JumpReLU SAE, transcoder and skip transcoder (inference and
    training) with SAELens, and route its Gemma Scope releases through this package's loader."""
    for architecture, inference, training in ARCHITECTURES:
        _register(architecture, *inference, training=False)
        _register(architecture, *training, training=True)
    register_sae_lens_route()
