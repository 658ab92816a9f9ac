"""Gemma Scope's JumpReLU SAEs and transcoders for TransformerLens and SAELens.

Importing the package registers its SAE classes and pretrained loader with SAELens; nothing else.
"""

from gemma_scope_ext.attribution import (
    AblationResult,
    AttributionRow,
    AttributionTable,
    ablate,
    attribution_patching,
    integrated_gradients,
    log_prob,
    logit_diff,
)
from gemma_scope_ext.catalog import CatalogEntry, Release, find_saes, get_entry, list_releases
from gemma_scope_ext.eval_breakdowns import (
    SweepResult,
    TransferResult,
    compare_saes,
    evaluate_datasets,
    evaluate_transfer,
    position_buckets,
)
from gemma_scope_ext.evaluation import EvalResult, evaluate, evaluate_many
from gemma_scope_ext.gemma2 import load_gemma2, tiny_gemma2
from gemma_scope_ext.graph import FeatureGraph, GraphNode, feature_graph
from gemma_scope_ext.loader import from_pretrained
from gemma_scope_ext.models import GEMMA2_MODELS, Gemma2Spec, get_spec
from gemma_scope_ext.plugin import register_with_sae_lens
from gemma_scope_ext.sae import GemmaScopeSAE, GemmaScopeSAEConfig
from gemma_scope_ext.sae_training import (
    GemmaScopeTrainingSAE,
    GemmaScopeTrainingSAEConfig,
    gemma_scope_sae_config,
)
from gemma_scope_ext.sites import SITES, Site, hook_name, hook_name_out, site_d_in
from gemma_scope_ext.splice import Splice, splice
from gemma_scope_ext.steering import clamp, steer
from gemma_scope_ext.text import sample_texts, sample_tokens
from gemma_scope_ext.transcoder import (
    GemmaScopeTrainingTranscoder,
    GemmaScopeTrainingTranscoderConfig,
    GemmaScopeTranscoder,
    GemmaScopeTranscoderConfig,
)
from gemma_scope_ext.transcoder_training import (
    TranscoderTrainingRunner,
    gemma_scope_transcoder_config,
)

__all__ = [
    "AblationResult",
    "AttributionRow",
    "AttributionTable",
    "FeatureGraph",
    "GraphNode",
    "Splice",
    "ablate",
    "attribution_patching",
    "clamp",
    "feature_graph",
    "integrated_gradients",
    "log_prob",
    "logit_diff",
    "splice",
    "steer",
    "GemmaScopeTranscoder",
    "GemmaScopeTranscoderConfig",
    "GemmaScopeTrainingTranscoder",
    "GemmaScopeTrainingTranscoderConfig",
    "TranscoderTrainingRunner",
    "gemma_scope_transcoder_config",
    "EvalResult",
    "SweepResult",
    "TransferResult",
    "compare_saes",
    "evaluate",
    "evaluate_datasets",
    "evaluate_many",
    "evaluate_transfer",
    "position_buckets",
    "CatalogEntry",
    "Release",
    "find_saes",
    "from_pretrained",
    "get_entry",
    "list_releases",
    "GemmaScopeSAE",
    "GemmaScopeSAEConfig",
    "GemmaScopeTrainingSAE",
    "GemmaScopeTrainingSAEConfig",
    "gemma_scope_sae_config",
    "register_with_sae_lens",
    "GEMMA2_MODELS",
    "SITES",
    "Gemma2Spec",
    "Site",
    "get_spec",
    "hook_name",
    "hook_name_out",
    "load_gemma2",
    "sample_texts",
    "sample_tokens",
    "site_d_in",
    "tiny_gemma2",
]

register_with_sae_lens()
