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

import math
from dataclasses import replace
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
from gemma_scope_ext.training.config import GemmaScopeTrainingSAEConfig
from gemma_scope_ext.training.decoder_grad import remove_parallel_grad
from gemma_scope_ext.training.saving import save_sae_files
from gemma_scope_ext.training.sparse_step import (
    candidate_density,
    sparse_training_step,
    use_sparse_training,
)

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
        self.input_scale.fill_(_unit_mean_squared_norm_scale(x))
        self.target_scale.fill_(_unit_mean_squared_norm_scale(target))
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

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        """One step of the recipe: loss = ||y - y_hat||^2 + lambda * L0 on scaled activations."""
        self.complete_step()  # of the previous optimiser step
        x, target = self.training_batch(step_input.sae_in)
        self.estimate_scales(x, target)
        sae_in = self.process_sae_in(x)
        target = target.to(self.dtype) * self.target_scale.to(self.dtype)
        d_out = self.W_dec.shape[1]
        if self._hooked() or sae_in.dim() != 2 or target.dim() != 2 or not use_sparse_training(
            self.cfg.sparse_training, self.pair_density, self.cfg.d_in, self.cfg.d_sae, d_out,
            sae_in.device,
        ):  # fmt: skip
            feature_acts, hidden_pre = self._encode_processed(sae_in)
            sae_out = self.hook_sae_recons(
                feature_acts @ self.project_decoder_grad(self.W_dec) + self.b_dec
            )
            mse_loss = (sae_out - target).pow(2).sum(dim=-1).mean()
            losses = {"mse_loss": mse_loss}
            losses.update(
                self.calculate_aux_loss(
                    replace(step_input, sae_in=sae_in), feature_acts, hidden_pre, sae_out
                )
            )
            if self.cfg.sparse_training == "auto":
                self.pair_density = candidate_density(
                    hidden_pre, self.get_threshold(), self.bandwidth
                )
        else:
            out = sparse_training_step(
                sae_in, self.W_enc, self.b_enc, self.get_threshold(), self.W_dec, self.b_dec,
                target, self.bandwidth, self.cfg.project_decoder_grad,
            )  # fmt: skip
            feature_acts, hidden_pre, sae_out = out.feature_acts, out.hidden_pre, out.sae_out
            self.pair_density = out.density
            losses = {"mse_loss": out.mse_loss, "l0_loss": step_input.coefficients["l0"] * out.l0}
        return TrainStepOutput(
            sae_in=target,
            sae_out=sae_out,
            feature_acts=feature_acts,
            hidden_pre=hidden_pre,
            loss=sum(losses.values()),  # type: ignore[arg-type]
            losses=losses,
        )

    def _hooked(self) -> bool:
        """Whether a hook sits on a point the sparse step does not route through."""
        points = (self.hook_sae_acts_pre, self.hook_sae_acts_post, self.hook_sae_recons)
        return any(p._forward_hooks or p._forward_pre_hooks for p in points)

    @override
    def calculate_aux_loss(
        self,
        step_input: TrainStepInput,
        feature_acts: Tensor,
        hidden_pre: Tensor,
        sae_out: Tensor,
    ) -> dict[str, Tensor]:
        """lambda * ||f||_0 through the step estimator (mean over tokens)."""
        threshold = self.get_threshold().to(hidden_pre.dtype)
        l0 = step(hidden_pre, threshold, self.bandwidth).sum(dim=-1)
        return {"l0_loss": step_input.coefficients["l0"] * l0.mean()}

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
    def save_inference_model(self, path: Any) -> Any:
        """Save in SAELens's stock ``jumprelu`` format (loads without this package).

        The final optimiser step is completed first, in place (see ``complete_step``).
        """
        self.complete_step()
        return save_sae_files(path, self.inference_state_dict(), self.cfg.get_inference_sae_cfg_dict())


def _unit_mean_squared_norm_scale(x: Tensor) -> float:
    mean_sq = x.detach().reshape(-1, x.shape[-1]).double().pow(2).sum(-1).mean().item()
    if not math.isfinite(mean_sq) or mean_sq <= 0:
        raise ValueError(
            f"cannot scale inputs to unit mean squared norm: the batch's E[||x||^2] is {mean_sq}; "
            "expected a positive finite value (is the hook producing zeros or NaNs?)"
        )
    return mean_sq**-0.5
