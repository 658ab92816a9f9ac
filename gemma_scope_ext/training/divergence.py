"""Recognising a diverging training run, so that it stops with a reason instead of saving garbage.

A step has diverged when its loss or thresholds are not finite, when the reconstruction loss is far
above that of predicting zero (the batch's mean squared target norm: the loss of an SAE that has
learnt nothing), or when a threshold is far above every pre-activation of the batch (the latent
can never fire again). On the tiny Gemma 2 a healthy run's reconstruction loss stays below the
zero-prediction loss; with ``lr=1e6`` it is 1e14 times it after one step and the thresholds reach
2e5 against pre-activations of 0.4. A ratio of 1000 separates the two by many orders of magnitude.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "TrainingDivergedError",
    "check_step",
    "check_weights",
    "diagnose_step",
    "diverged_message",
]


class TrainingDivergedError(RuntimeError):
    """Training stopped because the SAE's loss or weights blew up."""


def diagnose_step(
    mse: Tensor, target: Tensor, hidden_pre: Tensor, threshold: Tensor, ratio: float | None
) -> str | None:
    """What is wrong with one training step, in words, or None if it looks healthy.

    ``mse`` is the step's reconstruction loss (summed over dimensions, mean over rows) of
    ``target``; ``hidden_pre`` the batch's pre-activations and ``threshold`` the thresholds, all
    in the same (scaled) units. One host synchronisation.
    """
    with torch.no_grad():
        zero_loss = target.detach().float().pow(2).sum(-1).mean()
        pre_max = hidden_pre.detach().float().abs().max()
        values = torch.stack([mse.detach().float(), zero_loss, pre_max,
                              threshold.detach().float().max()]).tolist()  # fmt: skip
    mse_v, zero_v, pre_v, thr_v = values
    if not math.isfinite(mse_v):
        return f"the reconstruction loss is {mse_v}"
    if not math.isfinite(thr_v):
        return f"a threshold is {thr_v}"
    if ratio is None:
        return None
    if mse_v > ratio * zero_v:
        return (
            f"the reconstruction loss {mse_v:.3g} is more than {ratio:g} times that of predicting "
            f"zero ({zero_v:.3g})"
        )
    if thr_v > ratio * pre_v and thr_v > 0:
        return (
            f"the largest threshold {thr_v:.3g} is more than {ratio:g} times the batch's largest "
            f"pre-activation ({pre_v:.3g}): those latents can never fire"
        )
    return None


def diverged_message(problem: str, step: int | None, last_checkpoint: str | None) -> str:
    """The error a diverged run stops with: what went wrong, what to change, what was kept."""
    where = f"training diverged at step {step}" if step is not None else "training diverged"
    kept = (
        f"The last checkpoint, {last_checkpoint}, passed this check and is kept."
        if last_checkpoint
        else "No checkpoint had been saved (set n_checkpoints and checkpoint_path to keep some)."
    )
    return (
        f"{where}: {problem}. Expected a loss near or below that of predicting zero; lower the "
        f"learning rate (Gemma Scope used 7e-5). {kept}"
    )


def check_step(
    sae: Any, target: Tensor, hidden_pre: Tensor, sae_out: Tensor, step: int
) -> None:
    """Raise TrainingDivergedError if this training step of ``sae`` (a GemmaScopeTrainingSAE,
    untyped here since that module imports this one) has diverged."""
    mse = (sae_out - target).pow(2).sum(dim=-1).mean()
    problem = diagnose_step(mse, target, hidden_pre, sae.get_threshold(),
                            sae.cfg.divergence_ratio)  # fmt: skip
    if problem is not None:
        raise TrainingDivergedError(diverged_message(problem, step, sae.last_checkpoint))


@torch.no_grad()
def check_weights(sae: Any) -> None:
    """Raise TrainingDivergedError if ``sae``'s weights are not finite, or fail the divergence
    check on its last training batch (the check run before every save)."""
    for name, param in sae.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise TrainingDivergedError(diverged_message(
                f"{name} holds non-finite values", None, sae.last_checkpoint))  # fmt: skip
    if sae._last_batch is not None:
        x, target, step = sae._last_batch
        _, target, _, hidden_pre, sae_out = sae._scaled_forward(x, target)
        check_step(sae, target, hidden_pre, sae_out, step + 1)
