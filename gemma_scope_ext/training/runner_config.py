"""SAELens runner configs that train one Gemma Scope SAE or transcoder with the recipe, at its site."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig
from sae_lens.saes.sae import SAEMetadata

from gemma_scope_ext.models.families import get_family, get_spec
from gemma_scope_ext.models.sites import hook_name, hook_name_out, site_d_in, site_d_out
from gemma_scope_ext.training.checks import check_run_settings
from gemma_scope_ext.training.config import GemmaScopeTrainingSAEConfig
from gemma_scope_ext.training.skip_transcoder import GemmaScopeTrainingSkipTranscoderConfig
from gemma_scope_ext.training.transcoder import GemmaScopeTrainingTranscoderConfig

__all__ = [
    "TranscoderRunnerConfig",
    "gemma_scope_sae_config",
    "gemma_scope_token_budget",
    "gemma_scope_transcoder_config",
]


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

    Impossible settings (no tokens, an empty batch, a context longer than the model's, a buffer
    smaller than a batch, an lr outside (0, 1], a hook on a layer the model lacks, an
    ``output_path`` that is a file or cannot be written) raise ValueError here, before any model
    is loaded. An ``output_path`` that already holds a saved SAE is refused unless
    ``overwrite=True``, which also lets the final save replace it.
    """
    spec = get_spec(model_name)
    overwrite = overrides.pop("overwrite", False)
    if not isinstance(overwrite, bool):
        raise ValueError(f"overwrite must be True or False, got {overwrite!r}")
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
        overwrite_saved=overwrite, **sae_kwargs,
    )  # fmt: skip
    runner_kwargs: dict[str, Any] = {
        # A tiny model has no hub repo: runners get it as override_model, under its own name.
        "model_name": spec.name if spec.name == get_family(spec.family).tiny_model else spec.hf_name,
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
    check_run_settings(runner_kwargs, spec, overwrite)
    return LanguageModelSAERunnerConfig(sae=sae_cfg, **runner_kwargs)


@dataclass
class TranscoderRunnerConfig(LanguageModelSAERunnerConfig[Any]):
    """SAELens's runner config plus the hook whose value the transcoder predicts.

    ``hook_name`` is the input hook, as in SAELens's transcoder metadata.
    """

    hook_name_out: str = ""
    """Hook the transcoder's output stands in for (``blocks.{L}.hook_mlp_out`` for Gemma Scope)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.hook_name_out:
            raise ValueError(
                "TranscoderRunnerConfig needs hook_name_out (the hook the transcoder predicts, "
                "e.g. 'blocks.12.hook_mlp_out'); build it with gemma_scope_transcoder_config()"
            )
        if self.hook_name_out == self.hook_name:
            raise ValueError(
                f"hook_name_out equals hook_name ({self.hook_name!r}); a transcoder maps one hook "
                "to another: train an SAE for a single hook instead"
            )
        if self.use_cached_activations:
            raise ValueError(
                "use_cached_activations is not supported for transcoders: SAELens's cache runner "
                "stores one hook per dataset, and its multi-hook store reads no cache. Train from "
                "the model (set use_cached_activations=False)"
            )
        if self.model_class_name == "AutoModelForCausalLM":
            raise ValueError(
                "transcoders read TransformerLens hooks (ln2.hook_normalized, hook_mlp_out); "
                "model_class_name='AutoModelForCausalLM' has neither. Use 'HookedTransformer'"
            )
        if getattr(self.sae, "d_out", None) is None:
            raise ValueError(
                f"cfg.sae is a {type(self.sae).__name__}, which has no d_out; expected a "
                "transcoder training config such as GemmaScopeTrainingTranscoderConfig"
            )


def gemma_scope_transcoder_config(
    model_name: str, layer: int, d_sae: int, skip: bool = False, **overrides: Any
) -> TranscoderRunnerConfig:
    """A runner config for one Gemma Scope transcoder at ``layer``: the recipe, at the MLP.

    Input ``blocks.{layer}.ln2.hook_normalized``, target ``blocks.{layer}.hook_mlp_out``. Defaults and
    ``overrides`` are those of ``gemma_scope_sae_config`` (Adam beta1 0, lr 7e-5, BOS and other
    special tokens excluded, wandb off, fp32), and so are the checks made before anything runs.
    ``d_out``, if given, must be the width of the MLP output. ``skip=True`` trains Gemma Scope 2's
    skip transcoder (an affine ``x W_skip^T`` path beside the latents; saved as a stock
    ``jumprelu_skip_transcoder``).
    """
    expected_d_out = site_d_out(model_name, "transcoder")
    d_out = overrides.pop("d_out", expected_d_out)
    if d_out != expected_d_out:
        raise ValueError(
            f"d_out={d_out!r}, but the transcoder predicts {hook_name_out(model_name, 'transcoder', layer)}"
            f", which has width {expected_d_out} on {get_spec(model_name).name}; leave d_out out"
        )
    # The base config's __post_init__ names the run after its SAE and would write that name into a
    # caller's LoggingConfig; it gets its own default logger, and this config names the run.
    logger = overrides.pop("logger", None)
    base = gemma_scope_sae_config(model_name, "transcoder", layer, d_sae, **overrides)
    out_hook = hook_name_out(model_name, "transcoder", layer)
    if not isinstance(skip, bool):
        raise ValueError(f"skip must be True or False, got {skip!r}")
    config_cls = GemmaScopeTrainingSkipTranscoderConfig if skip else GemmaScopeTrainingTranscoderConfig
    sae_cfg = config_cls(
        **{f.name: getattr(base.sae, f.name) for f in fields(base.sae) if f.name != "metadata"},
        d_out=d_out,
        metadata=SAEMetadata(hook_name=base.hook_name, hook_name_out=out_hook),
    )
    runner_fields = {f.name: getattr(base, f.name) for f in fields(base) if f.init}
    runner_fields["logger"] = logger or replace(base.logger, run_name=None)
    # __post_init__ appends a fresh id to checkpoint_path; pass the caller's path, not the base's.
    runner_fields["checkpoint_path"] = overrides.get("checkpoint_path", base.checkpoint_path)
    return TranscoderRunnerConfig(**{**runner_fields, "sae": sae_cfg, "hook_name_out": out_hook})
