"""Which SAE features (and error terms) drive a scalar metric of the model's output.

Every node is a (site, layer, position, feature) activation of a spliced SAE, or the error term of a
site at a position (``feature`` None). Attributions estimate ``metric(clean) - metric(node set to
zero)``, with downstream SAEs re-encoding what reaches them:

- ``attribution_patching``: activation x gradient, one forward and one backward for every node.
- ``integrated_gradients``: the gradient averaged along the straight path from zero to the clean
  value, one site at a time; the attributions at a site sum to the effect of zeroing the whole site
  (completeness), up to the error of a ``steps``-point Gauss-Legendre quadrature.
- ``ablate``: the true effect of setting chosen nodes to ``scale`` x their value, to check either.

Batches are summed: a node's attribution is its total over the rows of ``tokens``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from gemma_scope_ext.circuits.splice import Splice, SplicedSite, splice

__all__ = [
    "AblationResult",
    "AttributionRow",
    "AttributionTable",
    "SiteCompleteness",
    "ablate",
    "attribution_patching",
    "integrated_gradients",
    "log_prob",
    "logit_diff",
]

Metric = Callable[[Tensor], Tensor]


class AttributionRow(NamedTuple):
    """One node and its attribution."""

    site: str
    """Gemma Scope site (``res``, ``mlp``, ``att``, ``transcoder``...)."""
    layer: int | None
    """Block index."""
    position: int
    """Token position."""
    feature: int | None
    """Feature index, or None for the site's error term."""
    attribution: float
    """Estimated metric(clean) - metric(node zeroed), summed over the batch."""
    activation: float
    """Feature activation (mean over the batch), or the error vector's norm."""


class SiteCompleteness(NamedTuple):
    """Integrated gradients' completeness at one site."""

    site: str
    """Gemma Scope site."""
    layer: int | None
    """Block index."""
    attribution_sum: float
    """Sum of the attributions of every node at the site."""
    metric_change: float
    """metric(clean) - metric(every node at the site zeroed), measured."""


@dataclass(frozen=True)
class AttributionTable:
    """Attributions of every active feature and every error node, largest magnitude first."""

    rows: tuple[AttributionRow, ...]
    """Ranked by |attribution|, descending."""
    method: str
    """``attribution_patching`` or ``integrated_gradients``."""
    metric_clean: float
    """The metric on the clean model."""
    completeness: tuple[SiteCompleteness, ...] = ()
    """Per-site sums against measured effects (integrated gradients only)."""

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[AttributionRow]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> AttributionRow:
        return self.rows[i]

    def features(self) -> tuple[AttributionRow, ...]:
        """The feature rows only (no error nodes)."""
        return tuple(r for r in self.rows if r.feature is not None)

    def find(self, site: str, layer: int | None, position: int, feature: int | None) -> AttributionRow:
        """The row of one node (raises KeyError when the node was inactive)."""
        for r in self.rows:
            if (r.site, r.layer, r.position, r.feature) == (site, layer, position, feature):
                return r
        raise KeyError(f"no row for node ({site!r}, {layer}, {position}, {feature})")

    def format(self, k: int = 10) -> str:
        """The top ``k`` rows as an aligned text table."""
        lines = [f"{self.method}: metric {self.metric_clean:.4f}",
                 f"{'site':>11} {'layer':>5} {'pos':>4} {'feature':>7} {'attr':>9} {'act':>8}"]
        for r in self.rows[:k]:
            feat = "error" if r.feature is None else str(r.feature)
            lines.append(f"{r.site:>11} {r.layer!s:>5} {r.position:>4} {feat:>7} "
                         f"{r.attribution:>9.4f} {r.activation:>8.3f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


class AblationResult(NamedTuple):
    """The measured effect of an intervention on the metric."""

    metric_clean: float
    """Metric with every node at its clean value."""
    metric_ablated: float
    """Metric with the chosen nodes scaled."""
    effect: float
    """metric_clean - metric_ablated: comparable with the summed attributions of the nodes."""


def _rows(site: SplicedSite, feats: Tensor, f_attr: Tensor, err: Tensor | None,
          e_attr: Tensor | None) -> list[AttributionRow]:
    rows = []
    attr, act = f_attr.sum(0), feats.mean(0)
    for pos, feat in torch.nonzero(feats.ne(0).any(0)).tolist():
        rows.append(AttributionRow(site.site, site.layer, pos, feat, float(attr[pos, feat]),
                                   float(act[pos, feat])))
    if err is not None and e_attr is not None:
        norms = err.norm(dim=-1).mean(0)
        for pos, a in enumerate(e_attr.sum(0).tolist()):
            rows.append(AttributionRow(site.site, site.layer, pos, None, a, float(norms[pos])))
    return rows


def _table(rows: list[AttributionRow], method: str, clean: float,
           completeness: tuple[SiteCompleteness, ...] = ()) -> AttributionTable:
    rows.sort(key=lambda r: -abs(r.attribution))
    return AttributionTable(tuple(rows), method, clean, completeness)


def attribution_patching(
    model: Any, saes: Any, tokens: Int[Tensor, "batch pos"], metric: Metric
) -> AttributionTable:
    """Activation x gradient for every active feature and every error node, in one backward pass."""
    with torch.enable_grad(), splice(model, saes, use_error_term=True) as sp:
        value = metric(model(tokens))
        nodes = [sp.nodes(s.sae) for s in sp.sites]
        grads = torch.autograd.grad(value, [t for n in nodes for t in (n.features, n.error)],
                                    allow_unused=True)
        rows = []
        for i, (site, n) in enumerate(zip(sp.sites, nodes, strict=True)):
            # A node the metric never reads (e.g. after its position) gets no gradient: zero.
            g_f, g_e = (torch.zeros_like(t) if g is None else g
                        for g, t in zip(grads[2 * i:2 * i + 2], n[1:], strict=True))
            f, e = n.features.detach(), n.error.detach()
            rows += _rows(site, f, f * g_f, e, (e * g_e).sum(-1))
    return _table(rows, "attribution_patching", float(value.detach()))


def _scaled_hooks(sp: Splice, site: SplicedSite, alpha: float, clean: Any, leaves: dict):
    """Hooks that put alpha x the clean features and error at ``site`` as fresh leaves."""

    def set_feats(acts: Tensor, hook: Any) -> Tensor:
        leaves["f"] = (alpha * clean.features).requires_grad_(True)
        return leaves["f"]

    def set_error(err: Tensor, hook: Any) -> Tensor:
        leaves["e"] = (alpha * clean.error).requires_grad_(True)
        return leaves["e"]

    return [(site.acts_hook, set_feats), (site.error_hook, set_error)]


def integrated_gradients(
    model: Any, saes: Any, tokens: Int[Tensor, "batch pos"], metric: Metric, steps: int = 16,
    progress: bool = True,
) -> AttributionTable:
    """Integrated gradients from a zero baseline, site by site, with a completeness check.

    At each site the features and the error are scaled together by alpha (``steps`` Gauss-Legendre
    nodes in (0, 1)); everything downstream, including later SAEs, responds. ``completeness`` in the result
    compares each site's summed attributions with the measured effect of zeroing the site.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    rows: list[AttributionRow] = []
    checks = []
    with splice(model, saes, use_error_term=True) as sp, torch.no_grad():
        clean_value = float(metric(model(tokens)))
        clean = {s.hook_out: sp.nodes(s.sae) for s in sp.sites}
        clean = {k: type(v)(*(t.detach() for t in v)) for k, v in clean.items()}
        # Gauss-Legendre nodes on (0, 1): exact for polynomial paths up to degree 2 * steps - 1, and
        # denser near alpha = 0, where a zeroed residual stream makes the next RMSNorm steep.
        xs, weights = np.polynomial.legendre.leggauss(steps)
        quad = [((x + 1) / 2, w / 2) for x, w in zip(xs.tolist(), weights.tolist(), strict=True)]
        work = [(s, alpha, w) for s in sp.sites for alpha, w in quad]
        sums: dict[str, list[Tensor]] = {}
        for site, alpha, w in tqdm(work, desc="integrated gradients", disable=not progress):
            leaves: dict[str, Tensor] = {}
            hooks = _scaled_hooks(sp, site, alpha, clean[site.hook_out], leaves)
            with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
                value = metric(model(tokens))
                g_f, g_e = torch.autograd.grad(value, [leaves["f"], leaves["e"]])
            acc = sums.setdefault(site.hook_out, [torch.zeros_like(g_f), torch.zeros_like(g_e)])
            acc[0] += w * g_f
            acc[1] += w * g_e
        for site in sp.sites:
            c, (g_f, g_e) = clean[site.hook_out], sums[site.hook_out]
            site_rows = _rows(site, c.features, c.features * g_f, c.error,
                              (c.error * g_e).sum(-1))
            with model.hooks(fwd_hooks=_scaled_hooks(sp, site, 0.0, c, {})):
                zeroed = float(metric(model(tokens)))
            # Sum over the tensors, not the rows: inactive features add exactly zero.
            total = float((c.features * g_f).sum() + (c.error * g_e).sum())
            checks.append(SiteCompleteness(site.site, site.layer, total, clean_value - zeroed))
            rows += site_rows
    return _table(rows, "integrated_gradients", clean_value, tuple(checks))


NodeKey = tuple[str, "int | None", int, "int | None"]


def ablate(
    model: Any, saes: Any, tokens: Int[Tensor, "batch pos"], metric: Metric,
    nodes: Iterable[NodeKey | AttributionRow], scale: float = 0.0,
) -> AblationResult:
    """Measure the metric with ``nodes`` set to ``scale`` x their clean value (0: ablation).

    Nodes are (site, layer, position, feature) tuples or table rows; feature None is the site's
    error term. The other error terms stay as computed, so later SAEs re-encode what reaches them.
    The linear estimate of ``effect`` is (1 - scale) x the nodes' summed attributions.
    """
    chosen: dict[tuple[str, int | None], list[tuple[int, int | None]]] = {}
    for node in nodes:
        site, layer, pos, feat = node[:4]
        chosen.setdefault((site, layer), []).append((pos, feat))
    with splice(model, saes, use_error_term=True) as sp, torch.no_grad():
        clean_value = float(metric(model(tokens)))
        hooks = []
        for (site_name, layer), entries in chosen.items():
            site = sp.site((site_name, layer))
            feats = [(p, f) for p, f in entries if f is not None]
            errs = [p for p, f in entries if f is None]

            def scale_feats(acts: Tensor, hook: Any, feats: list = feats) -> Tensor:
                acts = acts.clone()
                for p, f in feats:
                    acts[:, p, f] *= scale
                return acts

            def scale_errors(err: Tensor, hook: Any, errs: list = errs) -> Tensor:
                err = err.clone()
                err[:, errs] *= scale
                return err

            hooks += [(site.acts_hook, scale_feats)] if feats else []
            hooks += [(site.error_hook, scale_errors)] if errs else []
        with model.hooks(fwd_hooks=hooks):
            ablated = float(metric(model(tokens)))
    return AblationResult(clean_value, ablated, clean_value - ablated)


def logit_diff(
    position: int, good: int, bad: int
) -> Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]]:
    """Metric: logit of token ``good`` minus logit of ``bad`` at ``position``, summed over rows."""

    def metric(logits: Tensor) -> Tensor:
        return (logits[:, position, good] - logits[:, position, bad]).sum()

    return metric


def log_prob(
    position: int, token: int
) -> Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]]:
    """Metric: log-probability of ``token`` at ``position``, summed over rows."""

    def metric(logits: Tensor) -> Tensor:
        return logits[:, position].log_softmax(-1)[:, token].sum()

    return metric
