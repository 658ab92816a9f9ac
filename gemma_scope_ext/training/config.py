"""Configuration of Gemma Scope's JumpReLU training recipe: every default is Gemma Scope's."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from sae_lens.saes.sae import TrainingSAEConfig
from typing_extensions import override

from gemma_scope_ext.saes.sae import ARCHITECTURE
from gemma_scope_ext.training.sparsity import L0_PENALTIES

__all__ = ["GemmaScopeTrainingSAEConfig"]


@dataclass(kw_only=True)
class GemmaScopeTrainingSAEConfig(TrainingSAEConfig):
    """Gemma Scope's JumpReLU training recipe; every default is Gemma Scope's."""

    apply_b_dec_to_input: bool = False
    """Subtract ``b_dec`` from the input before encoding. Gemma Scope does not."""

    decoder_init_norm: float | None = 1.0
    """Norm of each decoder row at initialisation (He-uniform, then rescaled). Gemma Scope: 1."""

    jumprelu_bandwidth: float = 0.001
    """Width eps of the rectangle kernel in the threshold's straight-through estimators."""

    jumprelu_init_threshold: float = 0.001
    """Initial threshold of every latent."""

    threshold_parametrisation: Literal["log", "raw"] = "raw"
    """Train the threshold itself (SAELens's reading of DeepMind's pseudocode; kept >= 0 by
    clamping before each step) or log(threshold) (Gemma Scope's colab; always positive). The
    sources disagree. Raw is the default because Adam moves it additively: on SAELens's synthetic
    data (tests/test_synthetic_recovery.py) it recovers the true features in fewer steps."""

    l0_coefficient: float = 5e-4
    """Sparsity weight lambda on the L0 penalty. Gemma Scope's 9B sweeps used 1e-3 (L0 ~17),
    5e-4 (L0 ~60) and 1e-4 (L0 ~276), with inputs scaled to E[||x||^2] = 1."""

    l0_warm_up_steps: int = 10_000
    """Steps over which lambda rises linearly from 0 to ``l0_coefficient``."""

    l0_penalty: Literal["step", "quadratic"] = "step"
    """The penalty on each token's L0: the L0 itself (Gemma Scope), or Gemma Scope 2's quadratic
    ``(2 / target_l0) (l0 - target_l0)^2`` as SAELens implements it (``training/sparsity.py``
    says what is known of it). The quadratic penalty trains with the dense step."""

    target_l0: float | None = None
    """The target L0 of the quadratic penalty (required by it, refused by ``"step"``)."""

    input_scaling: Literal["unit_mean_squared_norm", "none"] = "unit_mean_squared_norm"
    """Multiply inputs by a fixed scalar so that E[||x||^2] = 1 (Gemma Scope), or leave them."""

    input_scale: float | None = None
    """The scalar itself, if known; None estimates it from the first training batch."""

    project_decoder_grad: bool = True
    """Remove the gradient component parallel to each decoder row before the optimiser step."""

    normalise_decoder: bool = True
    """Renormalise decoder rows to unit norm after every optimiser step."""

    divergence_ratio: float | None = 1000.0
    """Stop training with ``TrainingDivergedError`` when the reconstruction loss exceeds this many
    times the loss of predicting zero (the batch's mean squared target norm), or a threshold
    exceeds this many times the batch's largest pre-activation. None turns these two off; a
    non-finite loss or threshold always stops training."""

    overwrite_saved: bool = False
    """Let ``save_model``/``save_inference_model`` replace an SAE already saved in the folder
    (``gemma_scope_sae_config(overwrite=True)`` sets it)."""

    sparse_training: Literal["auto", "on", "off"] = "auto"
    """Run the training step sparse after the dense encoder forward (only active and in-band
    (token, latent) pairs are touched; same loss and gradients as the dense step). 'auto' uses it
    when the previous step's measured density is below the device's cut-off
    (``training/sparse_step.py``), 'on' and 'off' force it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_in < 1 or self.d_sae < 1:
            raise ValueError(
                f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}"
            )
        if not self.jumprelu_bandwidth > 0 or not self.jumprelu_init_threshold > 0:
            raise ValueError(
                f"bandwidth and initial threshold must be positive, got "
                f"{self.jumprelu_bandwidth} and {self.jumprelu_init_threshold}; "
                "Gemma Scope used 0.001 for both"
            )
        if self.threshold_parametrisation not in ("log", "raw"):
            raise ValueError(
                f"threshold_parametrisation must be 'log' or 'raw', "
                f"got {self.threshold_parametrisation!r}"
            )
        if self.l0_coefficient < 0 or self.l0_warm_up_steps < 0:
            raise ValueError(
                f"l0_coefficient and l0_warm_up_steps must be >= 0, got "
                f"{self.l0_coefficient} and {self.l0_warm_up_steps}"
            )
        if self.l0_penalty not in L0_PENALTIES:
            raise ValueError(
                f"l0_penalty must be one of {', '.join(L0_PENALTIES)}, got {self.l0_penalty!r}"
            )
        if self.l0_penalty == "quadratic" and not (
            self.target_l0 is not None and 0 < self.target_l0 <= self.d_sae
        ):
            raise ValueError(
                f"l0_penalty='quadratic' needs 0 < target_l0 <= d_sae ({self.d_sae}), got "
                f"{self.target_l0!r}; e.g. target_l0=60 for Gemma Scope 2's 'medium' L0"
            )
        if self.l0_penalty == "step" and self.target_l0 is not None:
            raise ValueError(
                f"target_l0={self.target_l0!r} is read only by l0_penalty='quadratic'; set that "
                "too, or leave target_l0 out"
            )
        if self.l0_penalty != "step" and self.sparse_training == "on":
            raise ValueError(
                "sparse_training='on' computes only the step penalty; use 'auto' or 'off' with "
                f"l0_penalty={self.l0_penalty!r}"
            )
        if self.sparse_training not in ("auto", "on", "off"):
            raise ValueError(
                f"sparse_training must be 'auto', 'on' or 'off', got {self.sparse_training!r}"
            )
        if self.input_scaling not in ("unit_mean_squared_norm", "none"):
            raise ValueError(
                f"input_scaling must be 'unit_mean_squared_norm' or 'none', "
                f"got {self.input_scaling!r}"
            )
        if self.divergence_ratio is not None and not self.divergence_ratio > 1:
            raise ValueError(
                f"divergence_ratio must be > 1 or None, got {self.divergence_ratio}"
            )
        if self.input_scale is not None and not self.input_scale > 0:
            raise ValueError(f"input_scale must be positive or None, got {self.input_scale}")
        if self.input_scaling != "none" and self.normalize_activations != "none":
            raise ValueError(
                f"input_scaling={self.input_scaling!r} already normalises the input; set "
                f"normalize_activations='none' (got {self.normalize_activations!r}) or "
                "input_scaling='none' to use SAELens's normalisation instead"
            )

    @override
    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE

    @override
    def get_inference_sae_cfg_dict(self) -> dict[str, Any]:
        """The saved inference config: SAELens's stock ``jumprelu`` format, scales folded in."""
        from sae_lens.saes.jumprelu_sae import JumpReLUSAEConfig

        result = {f.name: getattr(self, f.name) for f in fields(JumpReLUSAEConfig)}
        result["architecture"] = JumpReLUSAEConfig.architecture()
        result["metadata"] = self._metadata_with_training_info()
        return result
