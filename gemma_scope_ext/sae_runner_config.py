"""A SAELens runner config that trains one Gemma Scope SAE with the recipe, at the site's hook."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sae_lens import LanguageModelSAERunnerConfig

    from gemma_scope_ext.sae_training import GemmaScopeTrainingSAEConfig

__all__ = ["gemma_scope_sae_config", "gemma_scope_token_budget"]


def gemma_scope_token_budget(d_sae: int) -> int:
    """Gemma Scope's training tokens for an SAE of this width: 4B up to 16k, 8B up to 512k, else 16B."""
    return 4_000_000_000 if d_sae <= 2**14 else 8_000_000_000 if d_sae <= 2**19 else 16_000_000_000


def gemma_scope_sae_config(
    model_name: str, site: str, layer: int | None, d_sae: int, **overrides: Any
) -> LanguageModelSAERunnerConfig[GemmaScopeTrainingSAEConfig]:
    """A SAELens runner config for one Gemma Scope SAE: the recipe, at the site's hook.

    ``overrides`` replace runner fields (``training_tokens``, ``device``, ``dataset_path``...) or,
    when they name a ``GemmaScopeTrainingSAEConfig`` field (``l0_coefficient``...), SAE fields.
    Weights & Biases logging is off and nothing is fetched unless the overrides ask for it.
    """
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig

    from gemma_scope_ext.models import get_spec
    from gemma_scope_ext.sae_training import GemmaScopeTrainingSAEConfig
    from gemma_scope_ext.sites import hook_name, site_d_in

    spec = get_spec(model_name)
    hook = hook_name(spec, site, layer)
    derived = {"d_in", "d_sae", "reshape_activations"} & set(overrides)
    if derived:
        raise ValueError(
            f"{sorted(derived)} follow from the site and d_sae; pass d_sae as an argument "
            "and leave the rest to the mapping table"
        )
    # device and dtype name fields of both configs: they go to both.
    device, dtype = overrides.get("device", "cpu"), overrides.get("dtype", "float32")
    sae_fields = {f.name for f in fields(GemmaScopeTrainingSAEConfig)} - {"device", "dtype"}
    sae_kwargs = {k: overrides.pop(k) for k in list(overrides) if k in sae_fields}
    sae_cfg = GemmaScopeTrainingSAEConfig(
        d_in=site_d_in(spec, site), d_sae=d_sae, dtype=dtype, device=device,
        reshape_activations="hook_z" if hook.endswith("hook_z") else "none",
        **sae_kwargs,
    )  # fmt: skip
    runner_kwargs: dict[str, Any] = {
        "model_name": spec.hf_name if spec.name != "tiny-gemma2" else spec.name,
        "hook_name": hook,
        "dataset_path": "",
        "is_dataset_tokenized": False,
        "streaming": False,
        "context_size": 1024,
        "prepend_bos": True,
        "exclude_special_tokens": True,  # BOS (and EOS, pad) activations are outliers
        "train_batch_size_tokens": 4096,
        "training_tokens": gemma_scope_token_budget(d_sae),
        "lr": 7e-5,
        "adam_beta1": 0.0,
        "adam_beta2": 0.999,
        "lr_scheduler_name": "constant",
        "lr_warm_up_steps": 1000,
        "dtype": dtype,
        "device": device,
        "logger": LoggingConfig(log_to_wandb=False),
        "checkpoint_path": None,
        "verbose": False,
        "model_from_pretrained_kwargs": {},
    }
    runner_kwargs.update(overrides)
    unknown = set(runner_kwargs) - {f.name for f in fields(LanguageModelSAERunnerConfig)}
    if unknown:
        raise ValueError(
            f"unknown settings {sorted(unknown)}: expected fields of LanguageModelSAERunnerConfig "
            "or GemmaScopeTrainingSAEConfig"
        )
    return LanguageModelSAERunnerConfig(sae=sae_cfg, **runner_kwargs)
