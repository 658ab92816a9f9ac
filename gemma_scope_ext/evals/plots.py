"""PNG plots of evaluation results, the figures of the Gemma Scope report at any scale.

matplotlib (the ``plots`` extra) is imported inside each function, with the Agg backend, so the
package works without it. Files are written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gemma_scope_ext.evals.breakdowns import pareto_frontier, position_buckets
from gemma_scope_ext.evals.metrics import EvalResult
from gemma_scope_ext.files import atomic_write

__all__ = ["plot_by_dataset", "plot_by_position", "plot_l0_vs_delta_loss"]


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        raise RuntimeError(
            "plots need matplotlib; install it with `pip install gemma_scope_ext[plots]`"
        ) from err
    matplotlib.use("Agg", force=True)  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> Path:
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight",
                                                          format="png"))
    finally:
        _pyplot().close(fig)


def plot_l0_vs_delta_loss(
    results: Mapping[str, EvalResult], path: str | os.PathLike, title: str = ""
) -> Path:
    """Delta LM loss against L0 for each named SAE, the Pareto frontier joined by a line."""
    if not results:
        raise ValueError("no results to plot")
    plt = _pyplot()
    names = list(results)
    l0 = [results[n].l0 for n in names]
    dl = [results[n].delta_loss for n in names]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(l0, dl, color="tab:blue", zorder=3)
    front = pareto_frontier(l0, dl)
    ax.plot([l0[i] for i in front], [dl[i] for i in front], color="tab:blue", alpha=0.5,
            label="frontier")
    for name, x, y in zip(names, l0, dl, strict=True):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if min(l0) > 0 and max(l0) / min(l0) > 10:
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("L0 (active latents per token)")
    ax.set_ylabel("delta LM loss (nats)")
    ax.set_title(title or "Delta LM loss vs L0")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_by_position(
    results: Mapping[str, EvalResult],
    path: str | os.PathLike,
    edges: Sequence[int] | None = None,
    title: str = "",
) -> Path:
    """Delta loss and FVU by sequence position (bucketed), one line per named result."""
    if not results:
        raise ValueError("no results to plot")
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True)
    first = []
    for name, res in results.items():
        b = position_buckets(res.by_position, edges)
        # each bucket at its first position; empty buckets (BOS at 0) are left out
        ok = (b.n_tokens > 0).tolist()
        x = [v for v, k in zip(b.start.tolist(), ok, strict=True) if k]
        first += x[:1]
        top.plot(x, [v for v, k in zip(b.delta_loss.tolist(), ok, strict=True) if k],
                 marker="o", ms=3, label=name)
        bottom.plot(x, [v for v, k in zip(b.fvu.tolist(), ok, strict=True) if k],
                    marker="o", ms=3, label=name)
    top.axhline(0, color="grey", lw=0.8)
    top.set_ylabel("delta LM loss (nats)")
    bottom.set_ylabel("FVU share at position")
    bottom.set_xlabel("token position (first token of each bucket)")
    if max(r.by_position.n_tokens.numel() for r in results.values()) > 32 and first:
        from matplotlib.ticker import FuncFormatter, NullFormatter

        # log spreads out the first tokens, where behaviour changes; symlog only if 0 is shown
        lo = min(first)
        if lo > 0:
            bottom.set_xscale("log")
            bottom.set_xlim(left=lo / 1.2)
        else:
            bottom.set_xscale("symlog", linthresh=1)
            bottom.set_xlim(left=-0.2)
        bottom.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        bottom.xaxis.set_minor_formatter(NullFormatter())
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.legend(fontsize=7)
    top.set_title(title or "Metrics by position")
    return _save(fig, path)


def plot_by_dataset(
    results: Mapping[str, Mapping[str, EvalResult]], path: str | os.PathLike, title: str = ""
) -> Path:
    """Grouped bars of delta loss and FVU: ``results[dataset][sae]``, one colour per SAE."""
    if not results or not all(results.values()):
        raise ValueError("no results to plot")
    plt = _pyplot()
    datasets = list(results)
    saes = list(dict.fromkeys(name for per in results.values() for name in per))
    width = 0.8 / len(saes)
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.1 * len(datasets) * len(saes) + 3), 3.6))
    for ax, metric, label in zip(axes, ("delta_loss", "fvu"), ("delta LM loss (nats)", "FVU"),
                                 strict=True):
        for j, sae in enumerate(saes):
            xs = [i + (j - (len(saes) - 1) / 2) * width for i in range(len(datasets))]
            ys = [getattr(results[d][sae], metric) if sae in results[d] else float("nan")
                  for d in datasets]
            ax.bar(xs, ys, width=width, label=sae)
        ax.set_xticks(range(len(datasets)), datasets, rotation=20, fontsize=8)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    if len(saes) > 1:
        axes[0].legend(fontsize=7)
    fig.suptitle(title or "By dataset")
    return _save(fig, path)
