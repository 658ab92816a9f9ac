"""The Gemma Scope report's metrics (delta LM loss, FVU, L0), its breakdowns and its plots."""

from gemma_scope_ext.evals.breakdowns import (
    PositionBuckets,
    SweepResult,
    TransferResult,
    compare_saes,
    evaluate_datasets,
    evaluate_transfer,
    pareto_frontier,
    position_buckets,
    write_json,
)
from gemma_scope_ext.evals.metrics import evaluate, evaluate_many, site_means
from gemma_scope_ext.evals.plots import plot_by_dataset, plot_by_position, plot_l0_vs_delta_loss
from gemma_scope_ext.evals.stats import EvalResult, PositionProfile

__all__ = [
    "EvalResult",
    "PositionBuckets",
    "PositionProfile",
    "SweepResult",
    "TransferResult",
    "compare_saes",
    "evaluate",
    "evaluate_datasets",
    "evaluate_many",
    "evaluate_transfer",
    "pareto_frontier",
    "plot_by_dataset",
    "plot_by_position",
    "plot_l0_vs_delta_loss",
    "position_buckets",
    "site_means",
    "write_json",
]
