"""Ground truth: on SAELens's synthetic activations with known features, the recipe finds them.

Both SAEs train with SAELens's ``SAETrainer`` on the same stream of activations for the same number
of steps and learning rate. The L0 weights are matched: the recipe trains on inputs scaled to
E[||x||^2] = 1, so its lambda is SAELens's divided by E[||x||^2], which makes the two objectives
the same up to a constant factor. What differs is everything else in the recipe (bandwidth,
initial threshold, unit-norm decoder with projected gradients, W_enc = W_dec^T at unit norm,
Adam beta1 = 0), each at Gemma Scope's value.
"""

from __future__ import annotations

import contextlib
import io
from typing import NamedTuple

import pytest
import torch
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
from sae_lens.synthetic import ActivationGenerator, FeatureDictionary, SyntheticActivationIterator
from sae_lens.training.sae_trainer import SAETrainer

from gemma_scope_ext.training.sae import GemmaScopeTrainingSAE, GemmaScopeTrainingSAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")

D_IN, N_TRUE, D_SAE, P_FIRE = 48, 64, 128, 0.05
STEPS, BATCH, LR = 1200, 512, 1e-2
LAMBDA = 3e-3  # on inputs scaled to E||x||^2 = 1


class Recovery(NamedTuple):
    mean_best_cos: float
    """Mean over true features of the best cosine with any decoder row."""
    n_found: int
    """True features whose best match exceeds 0.9."""
    l0: float
    """Mean active latents per token on fresh data."""


def _data(seed: int = 0) -> SyntheticActivationIterator:
    torch.manual_seed(seed)
    features = FeatureDictionary(N_TRUE, D_IN, seed=seed)
    gen = ActivationGenerator(N_TRUE, firing_probabilities=P_FIRE, std_firing_magnitudes=0.25)
    return SyntheticActivationIterator(features, gen, BATCH)


def _fit(sae, beta1: float) -> Recovery:
    data = _data()
    cfg = SAETrainerConfig(
        n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False,
        total_training_samples=STEPS * BATCH, device="cpu", autocast=False, lr=LR, lr_end=LR,
        lr_scheduler_name="constant", lr_warm_up_steps=STEPS // 20, adam_beta1=beta1,
        adam_beta2=0.999, lr_decay_steps=0, n_restart_cycles=1, train_batch_size_samples=BATCH,
        dead_feature_window=1000, feature_sampling_window=2000,
        logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=10,
    )  # fmt: skip
    with contextlib.redirect_stderr(io.StringIO()):  # the trainer's progress bar
        SAETrainer(cfg, sae, data).fit()
    W = sae.W_dec.detach()
    W = W / W.norm(dim=-1, keepdim=True)
    best = (data.feature_dict.feature_vectors.detach() @ W.T).max(dim=1).values
    with torch.no_grad():
        l0 = (sae.encode(next(data)) > 0).float().sum(-1).mean().item()
    return Recovery(best.mean().item(), int((best > 0.9).sum()), l0)


@pytest.fixture(scope="module")
def mean_sq_norm() -> float:
    return next(_data(seed=1)).pow(2).sum(-1).mean().item()


def test_recipe_recovers_true_features_at_least_as_well_as_sae_lens(mean_sq_norm):
    torch.manual_seed(0)
    ours = _fit(
        GemmaScopeTrainingSAE(
            GemmaScopeTrainingSAEConfig(
                d_in=D_IN, d_sae=D_SAE, l0_coefficient=LAMBDA, l0_warm_up_steps=STEPS // 4
            )
        ),
        beta1=0.0,
    )
    torch.manual_seed(0)
    theirs = _fit(
        JumpReLUTrainingSAE(
            JumpReLUTrainingSAEConfig(
                d_in=D_IN, d_sae=D_SAE, l0_coefficient=LAMBDA * mean_sq_norm,
                l0_warm_up_steps=STEPS // 4,
            )  # fmt: skip
        ),
        beta1=0.9,
    )
    print(f"\nrecipe: {ours}\nsae_lens jumprelu: {theirs}\ntrue L0 {N_TRUE * P_FIRE:.2f}")
    assert ours.mean_best_cos > 0.95 and ours.n_found >= 0.9 * N_TRUE
    assert ours.mean_best_cos >= theirs.mean_best_cos - 0.005
    assert ours.n_found >= theirs.n_found - 1
    assert ours.l0 < 2 * N_TRUE * P_FIRE  # sparse, not a dense code that happens to align
