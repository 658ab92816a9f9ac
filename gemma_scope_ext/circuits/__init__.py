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
from gemma_scope_ext.circuits.feature_graph import FeatureGraph
from gemma_scope_ext.circuits.graph import feature_graph
from gemma_scope_ext.circuits.nodes import Edge, GraphNode
from gemma_scope_ext.circuits.pruning import GraphScores
from gemma_scope_ext.circuits.splice import SAEHookPoint, SiteNodes, Splice, SplicedSite, splice
from gemma_scope_ext.circuits.steering import clamp, steer
from gemma_scope_ext.circuits.targets import (
    DirectionTarget,
    LogitTarget,
    MetricTarget,
    salient_logits,
)

__all__ = [
    "AblationResult",
    "AttributionRow",
    "AttributionTable",
    "DirectionTarget",
    "Edge",
    "FeatureGraph",
    "GraphNode",
    "GraphScores",
    "LogitTarget",
    "MetricTarget",
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
    "salient_logits",
    "splice",
    "steer",
]
