"""What a feature graph explains: logit nodes, custom directions and scalar metrics.

Every target is read from the unembedding's input (``unembed.hook_in``, the final RMSNorm's
output) as a vector per position, its *readout*; a target's incoming edges are the readout pulled
back through the frozen model. How each kind reads:

- ``LogitTarget``: the token's logit minus the mean logit over the vocabulary (so that, as in
  circuit-tracer, a direction shared by every logit counts for nothing). ``softcap="pre"`` reads
  the logit before Gemma 2's final soft-cap (``30 tanh(l / 30)``), as circuit-tracer does; the
  target is then linear in the frozen model and its edges are exact direct effects, summing with
  the biases to its value. ``softcap="post"`` reads the logit the model reports (what
  ``logit_diff`` and ``log_prob`` see), linearised at the prompt: edges are gradient x activation,
  as for a metric.
- ``DirectionTarget``: ``unembed_in[position] . direction``, e.g. ``W_U[:, a] - W_U[:, b]`` for a
  pre-cap logit difference (circuit-tracer's custom target). Exact, like a pre-cap logit.
- ``MetricTarget``: any scalar function of the logits, linearised at the prompt.

``salient_logits`` picks circuit-tracer's default set: the most probable next tokens until their
probabilities add up to ``desired_logit_prob``, at most ``max_n_logits``, each weighted by its
probability. Probabilities always come from the model's real (soft-capped) logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "DirectionTarget",
    "LogitTarget",
    "MetricTarget",
    "Readout",
    "Target",
    "as_targets",
    "readouts",
    "salient_logits",
]

Softcap = Literal["pre", "post"]


@dataclass(frozen=True)
class LogitTarget:
    """A token's (demeaned) logit at one position."""

    token: int
    """Vocabulary id."""
    position: int = -1
    """Position read (negative counts from the end)."""
    weight: float | None = None
    """Weight in influence and pruning; None: the token's probability at that position."""

    def __post_init__(self) -> None:
        if self.token < 0:
            raise ValueError(f"token must be a vocabulary id >= 0, got {self.token}")


@dataclass(frozen=True)
class DirectionTarget:
    """``unembed_in[position] . direction``: a custom direction in the unembedding's input."""

    name: str
    """Label in the graph and its viewer."""
    direction: Tensor
    """[d_model] vector."""
    weight: float = 1.0
    """Weight in influence and pruning."""
    position: int = -1
    """Position read."""

    def __post_init__(self) -> None:
        if self.direction.ndim != 1:
            raise ValueError(f"direction must be a [d_model] vector, got shape "
                             f"{tuple(self.direction.shape)}")


@dataclass(frozen=True)
class MetricTarget:
    """Any scalar function of the logits [1, pos, d_vocab], linearised at the prompt."""

    name: str
    """Label in the graph and its viewer."""
    fn: Callable[[Tensor], Tensor]
    """The metric, e.g. ``logit_diff(pos, good, bad)``."""
    weight: float = 1.0
    """Weight in influence and pruning."""


Target = LogitTarget | DirectionTarget | MetricTarget


class Readout(NamedTuple):
    """A resolved target: its node's fields and the vector its edges are pulled back from."""

    kind: str
    """``logit``, ``direction`` or ``metric``."""
    label: str
    """Token text or name."""
    position: int | None
    """Position read, non-negative (None for a metric)."""
    feature: int
    """Token id, or a virtual id (d_vocab + index) for other targets."""
    weight: float
    """Weight in influence."""
    value: float
    """The target's value on the prompt."""
    vector: Tensor
    """[pos, d_model] readout at the unembedding input (zero away from ``position``)."""


def salient_logits(
    logits: Float[Tensor, "1 pos d_vocab"], position: int = -1, max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
) -> tuple[LogitTarget, ...]:
    """The most probable tokens until ``desired_logit_prob`` is reached, at most ``max_n_logits``,
    weighted by probability (circuit-tracer's default logit nodes)."""
    if max_n_logits < 1 or not 0 < desired_logit_prob <= 1:
        raise ValueError(f"need max_n_logits >= 1 and desired_logit_prob in (0, 1]; got "
                         f"{max_n_logits}, {desired_logit_prob}")
    probs = logits[0, position].detach().double().softmax(-1)
    top_p, top_i = probs.topk(min(max_n_logits, probs.numel()))
    cut = int(torch.searchsorted(top_p.cumsum(0), torch.tensor(desired_logit_prob).double())) + 1
    return tuple(LogitTarget(int(t), position, float(p))
                 for t, p in zip(top_i[:cut].tolist(), top_p[:cut].tolist(), strict=True))


def _position(p: int, n: int) -> int:
    if not -n <= p < n:
        raise ValueError(f"target position {p} is outside the prompt of {n} tokens")
    return p % n


def _softcap_slope(logits: Tensor, cap: float) -> Tensor:
    """d(post-cap)/d(pre-cap) = 1 - tanh^2, read from the post-cap logits themselves."""
    return 1 - (logits / cap).pow(2) if cap > 0 else torch.ones_like(logits)


def readouts(
    targets: Sequence[Target], logits: Tensor, pre_logits: Tensor, unembed_in: Tensor,
    w_u: Tensor, cap: float, softcap: Softcap, decode: Callable[[int], str] | None = None,
) -> list[Readout]:
    """Resolve targets on the prompt: logits [1,pos,V] (post-cap), pre_logits, unembed_in [1,pos,d],
    the unembedding W_U [d, V] and the final soft-cap (0: none)."""
    if softcap not in ("pre", "post"):
        raise ValueError(f"softcap must be 'pre' or 'post', got {softcap!r}")
    if not targets:
        raise ValueError("no targets: give a metric, targets, or neither for the salient logits")
    n_pos, d_vocab = logits.shape[1], logits.shape[2]
    logits, pre_logits = logits[0].detach(), pre_logits[0].detach()
    w_u = w_u.detach()
    out = []
    for i, t in enumerate(targets):
        vector = torch.zeros(n_pos, w_u.shape[0], dtype=w_u.dtype, device=w_u.device)
        if isinstance(t, LogitTarget):
            if t.token >= d_vocab:
                raise ValueError(f"logit target token {t.token} is outside the vocabulary of "
                                 f"{d_vocab}")
            p = _position(t.position, n_pos)
            if softcap == "pre":
                vector[p] = w_u[:, t.token] - w_u.mean(1)
                row = pre_logits[p]
            else:
                slope = _softcap_slope(logits[p], cap)
                vector[p] = slope[t.token] * w_u[:, t.token] - w_u @ slope / d_vocab
                row = logits[p]
            weight = t.weight
            if weight is None:
                weight = float(logits[p].double().softmax(-1)[t.token])
            label = decode(t.token) if decode else str(t.token)
            out.append(Readout("logit", label, p, t.token, float(weight),
                               float(row[t.token] - row.mean()), vector))
        elif isinstance(t, DirectionTarget):
            if t.direction.shape[0] != w_u.shape[0]:
                raise ValueError(f"direction target {t.name!r} has {t.direction.shape[0]} "
                                 f"dimensions; the unembedding input has {w_u.shape[0]}")
            p = _position(t.position, n_pos)
            vector[p] = t.direction.to(vector)
            value = float(unembed_in[0, p].detach() @ vector[p])
            out.append(Readout("direction", t.name, p, d_vocab + i, t.weight, value, vector))
        elif isinstance(t, MetricTarget):
            out.append(_metric_readout(t, logits, w_u, cap, d_vocab + i))
        else:
            raise TypeError(f"targets must be LogitTarget, DirectionTarget or MetricTarget, "
                            f"got {type(t).__name__}")
    return out


def _metric_readout(t: MetricTarget, logits: Tensor, w_u: Tensor, cap: float,
                    feature: int) -> Readout:
    x = logits[None].clone().requires_grad_(True)
    with torch.enable_grad():
        value = t.fn(x)
        if value.numel() != 1:
            raise ValueError(f"metric {t.name!r} must return a scalar, got shape "
                             f"{tuple(value.shape)}")
        (grad,) = torch.autograd.grad(value, x, allow_unused=True)
    grad = torch.zeros_like(x) if grad is None else grad
    vector = (grad[0] * _softcap_slope(logits, cap)) @ w_u.T
    return Readout("metric", t.name, None, feature, t.weight, float(value.detach()), vector)


def as_targets(metric: Any, targets: Any, logits: Tensor, max_n_logits: int,
               desired_logit_prob: float) -> list[Target]:
    """The targets ``feature_graph`` was asked for: a metric, target objects or token ids, or
    (neither given) the salient logits at the last position."""
    chosen: list[Target] = []
    if metric is not None:
        chosen.append(MetricTarget(getattr(metric, "__name__", "metric"), metric))
    if targets is None and metric is None:
        return list(salient_logits(logits, -1, max_n_logits, desired_logit_prob))
    if isinstance(targets, Tensor):
        targets = targets.flatten().tolist()
    for t in targets or ():
        chosen.append(LogitTarget(int(t)) if isinstance(t, int) else t)
    return chosen
