"""Steering with SAE features: add decoder directions, or clamp features, while the model runs.

Both are context managers over TransformerLens hooks, so they apply to every forward pass inside
the block, ``model.generate`` included:

    with steer(model, sae, feature=123, coefficient=8.0):
        text = model.generate("def f(", max_new_tokens=10)

``steer`` adds ``coefficient * W_dec[feature]`` at the SAE's output hook (no SAE is run). ``clamp``
splices the SAE with its error term and sets the feature's activation to ``value``, so the output
moves by ``(value - f) * W_dec[feature]`` and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from gemma_scope_ext.circuits.splice import splice

__all__ = ["clamp", "steer"]


def _as_lists(features: int | Sequence[int], amounts: float | Sequence[float], what: str):
    feats = [features] if isinstance(features, int) else list(features)
    vals = [float(amounts)] * len(feats) if isinstance(amounts, (int, float)) else list(amounts)
    if len(feats) != len(vals) or not feats:
        raise ValueError(f"need one {what} per feature: got {len(feats)} features and "
                         f"{len(vals)} {what}s")
    return feats, vals


def _check_features(sae: Any, feats: list[int]) -> None:
    bad = [f for f in feats if not 0 <= f < sae.cfg.d_sae]
    if bad:
        raise ValueError(f"feature indices {bad} out of range: the SAE has {sae.cfg.d_sae} features")


def _positions(positions: Sequence[int] | None) -> slice | list[int]:
    return slice(None) if positions is None else list(positions)


@contextmanager
def steer(
    model: Any, sae: Any, feature: int | Sequence[int], coefficient: float | Sequence[float],
    positions: Sequence[int] | None = None,
) -> Iterator[None]:
    """Add ``coefficient * W_dec[feature]`` at the SAE's output hook inside the block.

    ``positions`` index the tokens of each forward pass (all when None); during cached generation
    each new token is its own forward pass of length one, so leave it None to steer the generation.
    """
    feats, coeffs = _as_lists(feature, coefficient, "coefficient")
    _check_features(sae, feats)
    hook = getattr(sae.cfg.metadata, "hook_name_out", None) or sae.cfg.metadata.hook_name
    # [d_out]: the combined steering vector, in the model's dtype.
    direction = (torch.tensor(coeffs, dtype=sae.W_dec.dtype, device=sae.W_dec.device)
                 @ sae.W_dec[feats].detach())
    where = _positions(positions)

    def add(x: Tensor, hook: Any) -> Tensor:
        x = x.clone()
        # hook_z is [batch, pos, head, d_head]; the direction is flattened head-major.
        x[:, where] += direction.to(x.dtype).view(x.shape[2:])
        return x

    with model.hooks(fwd_hooks=[(hook, add)]):
        yield


@contextmanager
def clamp(
    model: Any, sae: Any, feature: int | Sequence[int], value: float | Sequence[float],
    positions: Sequence[int] | None = None,
) -> Iterator[Any]:
    """Splice ``sae`` (error term on) and hold ``feature`` at ``value`` inside the block.

    Yields the ``Splice`` handle, so the clamped activations are readable after a forward pass.
    """
    feats, vals = _as_lists(feature, value, "value")
    _check_features(sae, feats)
    where = _positions(positions)

    def set_acts(acts: Tensor, hook: Any) -> Tensor:
        acts = acts.clone()
        for f, v in zip(feats, vals, strict=True):
            acts[:, where, f] = v
        return acts

    with splice(model, sae, use_error_term=True) as sp:
        with model.hooks(fwd_hooks=[(sp.sites[0].acts_hook, set_acts)]):
            yield sp
