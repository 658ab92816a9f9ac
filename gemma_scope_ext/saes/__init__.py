"""Gemma Scope's JumpReLU maths and its SAE, transcoder and skip transcoder for inference, as
SAELens classes."""

from gemma_scope_ext.saes.jumprelu import JumpReLU, Step, jumprelu, rectangle, step
from gemma_scope_ext.saes.params import PARAM_NAMES, jumprelu_widths, rescale_for_hook_embed
from gemma_scope_ext.saes.sae import GemmaScopeSAE, GemmaScopeSAEConfig
from gemma_scope_ext.saes.skip_transcoder import (
    GemmaScopeSkipTranscoder,
    GemmaScopeSkipTranscoderConfig,
)
from gemma_scope_ext.saes.sparse_decode import decode_active, use_sparse_decode
from gemma_scope_ext.saes.tiny import tiny_sae
from gemma_scope_ext.saes.transcoder import GemmaScopeTranscoder, GemmaScopeTranscoderConfig

__all__ = [
    "PARAM_NAMES",
    "GemmaScopeSAE",
    "GemmaScopeSAEConfig",
    "GemmaScopeSkipTranscoder",
    "GemmaScopeSkipTranscoderConfig",
    "GemmaScopeTranscoder",
    "GemmaScopeTranscoderConfig",
    "JumpReLU",
    "Step",
    "decode_active",
    "jumprelu",
    "jumprelu_widths",
    "rectangle",
    "rescale_for_hook_embed",
    "step",
    "tiny_sae",
    "use_sparse_decode",
]
