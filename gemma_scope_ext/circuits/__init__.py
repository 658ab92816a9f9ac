"""Circuit analysis through TransformerLens hooks: splicing, attribution, feature graphs, steering."""

from gemma_scope_ext.circuits.attribution import (
    AblationResult,
    AttributionRow,
    AttributionTable,
    SiteCompleteness,
    ablate,
    attribution_patching,
    integrated_gradients,
    log_prob,
    logit_diff,
)
from gemma_scope_ext.circuits.graph import Edge, FeatureGraph, GraphNode, feature_graph
from gemma_scope_ext.circuits.splice import SAEHookPoint, SiteNodes, Splice, SplicedSite, splice
from gemma_scope_ext.circuits.steering import clamp, steer

__all__ = [
    "AblationResult",
    "AttributionRow",
    "AttributionTable",
    "Edge",
    "FeatureGraph",
    "GraphNode",
    "SAEHookPoint",
    "SiteCompleteness",
    "SiteNodes",
    "Splice",
    "SplicedSite",
    "ablate",
    "attribution_patching",
    "clamp",
    "feature_graph",
    "integrated_gradients",
    "log_prob",
    "logit_diff",
    "splice",
    "steer",
]
