"""Training a JumpReLU SAE with the Gemma Scope recipe, as a SAELens ``TrainingSAE``.

Every point of the recipe is a config field whose default is Gemma Scope's; each runs inside the
SAE, so SAELens's stock ``SAETrainer`` and runners drive it unchanged:

- inputs multiplied by a fixed scalar so that E[||x||^2] = 1, estimated from the first training
  batch (before any update) unless given, and folded into the weights at save;
- L0 penalty through the step estimator, lambda warmed up linearly from 0 (SAELens's coefficient
  scheduler does exactly this);
- decoder rows kept unit norm: the gradient component parallel to each row is projected out in the
  backward pass, and rows are renormalised after each optimiser step (applied at the start of the
  next training step, which is the same sequence, and once more at save);
- threshold trained raw or as log-threshold; W_dec He-uniform with unit rows, W_enc = W_dec^T.

What the stock trainer fixes that Gemma Scope did otherwise, without patching SAELens:

- the trainer clips the global gradient norm at 1.0 (hard-coded); Gemma Scope reports no clipping;
- SAELens's learning-rate warm-up is linear from lr/warm_up_steps, not the cosine from 0.1*lr
  that a reimplementation of Gemma Scope uses (itself unverified);
- optimiser betas, lr and warm-up steps live in the runner config (``gemma_scope_sae_config`` in
  ``runner_config.py``).

The methods ``training_batch``, ``estimate_scales``, ``project_decoder_grad``,
``renormalise_decoder``, ``fold_scales`` and ``inference_state_dict`` are the recipe's steps; a
transcoder subclass (input width d_in, output width d_out, separate input and target scalars)
overrides ``training_batch`` and reuses the rest.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from sae_lens.saes.sae import (
    TrainCoefficientConfig,
    TrainingSAE,
    TrainStepInput,
    TrainStepOutput,
)
from torch import Tensor, nn
from typing_extensions import override

from gemma_scope_ext.saes.jumprelu import jumprelu, step
from gemma_scope_ext.training import divergence
from gemma_scope_ext.training.config import GemmaScopeTrainingSAEConfig
from gemma_scope_ext.training.decoder_grad import remove_parallel_grad
from gemma_scope_ext.training.saving import save_beside, save_sae_files
from gemma_scope_ext.training.scaling import unit_norm_scale
from gemma_scope_ext.training.sparse_step import (
    candidate_density,
    sparse_training_step,
    use_sparse_training,
)
from gemma_scope_ext.training.sparsity import sparsity_penalty

__all__ = ["GemmaScopeTrainingSAE", "GemmaScopeTrainingSAEConfig"]


class GemmaScopeTrainingSAE(TrainingSAE[GemmaScopeTrainingSAEConfig]):
    """A JumpReLU SAE trained with the Gemma Scope recipe.

    ``encode``/``decode``/``forward`` take and return raw activations; the training loss is on
    scaled ones. ``input_scale`` and ``target_scale`` are buffers (equal for an SAE).
    """

    b_enc: nn.Parameter
    input_scale: Tensor
    target_scale: Tensor
    scales_fixed: Tensor

    def __init__(self, cfg: GemmaScopeTrainingSAEConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)
        self.bandwidth = cfg.jumprelu_bandwidth
        known = cfg.input_scale if cfg.input_scaling != "none" else 1.0
        self.register_buffer("input_scale", self._scalar(known or 1.0))
        self.register_buffer("target_scale", self._scalar(known or 1.0))
        self.register_buffer("scales_fixed", torch.tensor(known is not None, device=self.device))
        self.last_checkpoint: str | None = None
        """The folder ``save_model`` last wrote (SAELens's trainer saves checkpoints with it)."""
        self._last_batch: tuple[Tensor, Tensor, int] | None = None  # (x, target, step), raw
        self.pair_density: float | None = None
        """Candidate-pair density of the last training step (chooses the sparse step in 'auto')."""

    def _scalar(self, value: float) -> Tensor:
        return torch.tensor(value, dtype=torch.float32, device=self.device)

    @override
    def initialize_weights(self) -> None:
        super().initialize_weights()  # He-uniform W_dec, rows rescaled, W_enc = W_dec^T
        self.b_enc = nn.Parameter(torch.zeros(self.cfg.d_sae, dtype=self.dtype, device=self.device))
        theta = torch.full((self.cfg.d_sae,), self.cfg.jumprelu_init_threshold,
                           dtype=torch.float32, device=self.device)  # fmt: skip
        # Kept in float32: Adam's lr-sized steps on a small threshold vanish in bfloat16.
        if self.cfg.threshold_parametrisation == "log":
            self.log_threshold = nn.Parameter(theta.log())
        else:
            self.threshold = nn.Parameter(theta)

    def get_threshold(self) -> Float[Tensor, " d_sae"]:
        """The current thresholds (float32), differentiable with respect to the parameter."""
        if self.cfg.threshold_parametrisation == "log":
            return self.log_threshold.exp()
        return self.threshold

    # --- recipe steps (overridable) ----------------------------------------------------------

    def training_batch(self, sae_in: Tensor) -> tuple[Tensor, Tensor]:
        """Split the trainer's batch into (encoder input, reconstruction target), both raw.

        An SAE reconstructs its input; a transcoder overrides this.
        """
        return sae_in, sae_in

    @torch.no_grad()
    def estimate_scales(self, x: Tensor, target: Tensor) -> None:
        """Fix the input and target scalars from one batch so that E[||s x||^2] = 1."""
        if bool(self.scales_fixed):
            return
        self.input_scale.fill_(unit_norm_scale(x))
        self.target_scale.fill_(unit_norm_scale(target))
        self.scales_fixed.fill_(True)

    def project_decoder_grad(self, W_dec: Tensor) -> Tensor:
        """W_dec as used in the training forward pass: with the row-parallel gradient removed."""
        return remove_parallel_grad(W_dec) if self.cfg.project_decoder_grad else W_dec

    @torch.no_grad()
    def renormalise_decoder(self) -> None:
        """Rescale every decoder row to unit norm (no-op when ``normalise_decoder`` is off)."""
        if self.cfg.normalise_decoder:
            self.W_dec.data /= self.W_dec.data.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    @torch.no_grad()
    def complete_step(self) -> None:
        """What follows each optimiser step: unit-norm decoder rows and raw thresholds >= 0.

        Run before each training step and before saving: SAELens's stock encoder applies ReLU
        before the gate, so only thresholds >= 0 give it the same outputs as this class.
        """
        self.renormalise_decoder()
        if self.cfg.threshold_parametrisation == "raw":
            self.threshold.data.clamp_(min=0.0)

    @torch.no_grad()
    def fold_scales(self) -> None:
        """Fold the input and target scalars into the weights, in place; outputs do not change.

        f = JumpReLU(s_in x W_enc + b_enc) and x_hat = (f W_dec + b_dec) / s_out, so W_enc takes
        s_in and W_dec, b_dec take 1/s_out; thresholds and b_enc are unchanged.
        """
        s_in, s_out = self.input_scale.item(), self.target_scale.item()
        self.W_enc.data *= s_in
        self.W_dec.data /= s_out
        self.b_dec.data /= s_out
        self.input_scale.fill_(1.0)
        self.target_scale.fill_(1.0)
        self.scales_fixed.fill_(True)

    @torch.no_grad()
    def inference_state_dict(self) -> dict[str, Tensor]:
        """Stock SAELens ``jumprelu`` parameters, scales folded in; the module is left untouched."""
        s_in, s_out = self.input_scale.item(), self.target_scale.item()
        return {
            "W_enc": (self.W_enc * s_in).contiguous(),
            "W_dec": (self.W_dec / s_out).contiguous(),
            "b_enc": self.b_enc.detach().clone(),
            "b_dec": (self.b_dec / s_out).contiguous(),
            "threshold": self.get_threshold().detach().to(self.dtype).contiguous(),
        }

    # --- forward passes --------------------------------------------------------------------

    @override
    def process_sae_in(self, sae_in: Tensor) -> Tensor:
        """Raw input -> scaled encoder input (b_dec, if subtracted, lives in the scaled space)."""
        sae_in = self.reshape_fn_in(sae_in.to(self.dtype))
        sae_in = self.run_time_activation_norm_fn_in(self.hook_sae_input(sae_in))
        sae_in = sae_in * self.input_scale.to(self.dtype)
        # Subtracting b_dec * False would still make the input require grad, and cost a product.
        return sae_in - self.b_dec if self.cfg.apply_b_dec_to_input else sae_in

    def _encode_processed(self, sae_in: Tensor) -> tuple[Tensor, Tensor]:
        hidden_pre = self.hook_sae_acts_pre(sae_in @ self.W_enc + self.b_enc)
        threshold = self.get_threshold().to(hidden_pre.dtype)
        feature_acts = self.hook_sae_acts_post(jumprelu(hidden_pre, threshold, self.bandwidth))
        return feature_acts, hidden_pre

    @override
    def encode_with_hidden_pre(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(latent activations, pre-activations) for raw input ``x``."""
        return self._encode_processed(self.process_sae_in(x))

    @override
    def decode(self, feature_acts: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_out"]:
        """Reconstruction in the raw (unscaled) space."""
        sae_out = (feature_acts @ self.W_dec + self.b_dec) / self.target_scale.to(self.dtype)
        sae_out = self.run_time_activation_norm_fn_out(self.hook_sae_recons(sae_out))
        return self.reshape_fn_out(sae_out, self.d_head)

    def _scaled_inputs(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(scaled, processed SAE input, scaled target)."""
        return self.process_sae_in(x), target.to(self.dtype) * self.target_scale.to(self.dtype)

    def _scaled_forward(self, x: Tensor, target: Tensor) -> tuple[Tensor, ...]:
        """The dense step: (scaled input, scaled target, latent activations, pre-activations,
        scaled reconstruction)."""
        sae_in, target = self._scaled_inputs(x, target)
        feature_acts, hidden_pre = self._encode_processed(sae_in)
        return sae_in, target, feature_acts, hidden_pre, self._decode_scaled(feature_acts, sae_in)

    def _decode_scaled(self, feature_acts: Tensor, sae_in: Tensor) -> Tensor:
        """Scaled output; ``sae_in`` (the scaled input) is for a skip connection's subclass."""
        return self.hook_sae_recons(
            feature_acts @ self.project_decoder_grad(self.W_dec) + self.b_dec
        )

    def check_weights(self) -> None:
        """Raise TrainingDivergedError if the weights are not finite or fail the divergence check
        on the last training batch; called before every save."""
        divergence.check_weights(self)

    def _sparse_step_applies(self, sae_in: Tensor, target: Tensor) -> bool:
        # the sparse step routes through none of these hook points: a hook there needs the dense one
        points = (self.hook_sae_acts_pre, self.hook_sae_acts_post, self.hook_sae_recons)
        if any(p._forward_hooks or p._forward_pre_hooks for p in points):
            return False
        if sae_in.dim() != 2 or target.dim() != 2 or self.cfg.l0_penalty != "step":
            return False
        return use_sparse_training(
            self.cfg.sparse_training, self.pair_density, self.cfg.d_in, self.cfg.d_sae,
            self.W_dec.shape[1], sae_in.device,
        )  # fmt: skip

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        """One step of the recipe: loss = ||y - y_hat||^2 + lambda * L0 on scaled activations.

        The step runs sparse after the encoder forward where ``sparse_training`` chooses it (same
        loss and gradients). Raises TrainingDivergedError when the step has diverged (see
        ``training/divergence.py``).
        """
        self.complete_step()  # of the previous optimiser step
        x, target = self.training_batch(step_input.sae_in)
        self.estimate_scales(x, target)
        self._last_batch = (x.detach(), target.detach(), step_input.n_training_steps)
        sae_in, target = self._scaled_inputs(x, target)
        if self._sparse_step_applies(sae_in, target):
            out = sparse_training_step(
                sae_in, self.W_enc, self.b_enc, self.get_threshold(), self.W_dec, self.b_dec,
                target, self.bandwidth, self.cfg.project_decoder_grad,
            )  # fmt: skip
            feature_acts, hidden_pre, sae_out = out.feature_acts, out.hidden_pre, out.sae_out
            self.pair_density = out.density
            losses = {"mse_loss": out.mse_loss, "l0_loss": step_input.coefficients["l0"] * out.l0}
        else:
            feature_acts, hidden_pre = self._encode_processed(sae_in)
            sae_out = self._decode_scaled(feature_acts, sae_in)
            losses = {"mse_loss": (sae_out - target).pow(2).sum(dim=-1).mean()}
            losses.update(
                self.calculate_aux_loss(
                    replace(step_input, sae_in=sae_in), feature_acts, hidden_pre, sae_out
                )
            )
            if self.cfg.sparse_training == "auto":
                self.pair_density = candidate_density(
                    hidden_pre, self.get_threshold(), self.bandwidth
                )
        divergence.check_step(self, target, hidden_pre, sae_out, step_input.n_training_steps)
        return TrainStepOutput(
            sae_in=target,
            sae_out=sae_out,
            feature_acts=feature_acts,
            hidden_pre=hidden_pre,
            loss=sum(losses.values()),  # type: ignore[arg-type]
            losses=losses,
        )

    @override
    def calculate_aux_loss(
        self,
        step_input: TrainStepInput,
        feature_acts: Tensor,
        hidden_pre: Tensor,
        sae_out: Tensor,
    ) -> dict[str, Tensor]:
        """lambda * the L0 penalty (``l0_penalty``: ``training/sparsity.py``), mean over tokens."""
        threshold = self.get_threshold().to(hidden_pre.dtype)
        l0 = step(hidden_pre, threshold, self.bandwidth).sum(dim=-1)
        penalty = sparsity_penalty(l0, self.cfg.l0_penalty, self.cfg.target_l0)
        return {"l0_loss": step_input.coefficients["l0"] * penalty}

    @override
    def get_coefficients(self) -> dict[str, float | TrainCoefficientConfig]:
        return {
            "l0": TrainCoefficientConfig(
                value=self.cfg.l0_coefficient, warm_up_steps=self.cfg.l0_warm_up_steps
            )
        }

    # --- folding and saving ----------------------------------------------------------------

    @override
    @torch.no_grad()
    def fold_W_dec_norm(self) -> None:
        """Fold decoder row norms into the encoder; thresholds scale with b_enc."""
        norms = self.fold_and_get_W_dec_norm()
        if self.cfg.threshold_parametrisation == "log":
            self.log_threshold.data += norms.log().to(self.log_threshold.dtype)
        else:
            self.threshold.data *= norms.to(self.threshold.dtype)

    @override
    def process_state_dict_for_saving_inference(self, state_dict: dict[str, Any]) -> None:
        state_dict.clear()
        state_dict.update(self.inference_state_dict())

    @override
    def save_model(self, path: Any, overwrite: bool | None = None) -> tuple[Path, Path]:
        """SAELens's training checkpoint format, written atomically after ``check_weights``.

        A folder that already holds a saved SAE is refused (FileExistsError) unless ``overwrite``
        (default: the config's ``overwrite_saved``).
        """
        self.check_weights()
        state = self.state_dict()
        self.process_state_dict_for_saving(state)
        overwrite = self.cfg.overwrite_saved if overwrite is None else overwrite
        saved = save_sae_files(path, state, self.cfg.to_dict(), overwrite)
        self.last_checkpoint = str(path)
        return saved

    @override
    def save_inference_model(self, path: Any, overwrite: bool | None = None) -> tuple[Path, Path]:
        """Save in SAELens's stock ``jumprelu`` format (loads without this package).

        The final optimiser step is completed first, in place (see ``complete_step``), and the
        weights checked. Over a saved SAE without ``overwrite`` (default: the config's
        ``overwrite_saved``), see ``save_beside``: nothing is replaced and nothing is lost.
        """
        self.complete_step()
        self.check_weights()
        overwrite = self.cfg.overwrite_saved if overwrite is None else overwrite
        return save_beside(path, self.inference_state_dict(),
                           self.cfg.get_inference_sae_cfg_dict(), overwrite)  # fmt: skip

