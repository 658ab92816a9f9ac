"""Training Gemma Scope transcoders with SAELens's own runner, store and trainer.

SAELens's ``SAETrainer`` moves, counts and scales one activation tensor per step. A transcoder needs a
pair (MLP input, MLP output) from the same tokens, so the store here captures both hooks in one
forward pass with SAELens's multi-hook loader (one shuffle permutation for both, one special-token
mask for both) and serves them packed side by side, ``[x | y]``; the training transcoder splits them.
Everything else (optimiser, schedules, checkpoints, saving) is SAELens's, unchanged.

SAELens's trainer calls the runner's evaluator only when it logs to wandb; ``TranscoderEvaluator``
(in ``transcoder_eval``) can also be called directly. Training from cached activations is not
offered: SAELens's ``CacheActivationsRunner`` writes a single hook per run and its multi-hook store
reads no cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from sae_lens.config import HfDataset, LanguageModelSAERunnerConfig
from sae_lens.llm_sae_training_runner import LanguageModelSAETrainingRunner
from sae_lens.saes.sae import SAEMetadata
from sae_lens.training.activations_store import ActivationsStore
from sae_lens.util import get_special_token_ids
from torch import Tensor
from transformer_lens.hook_points import HookedRootModule
from typing_extensions import override

from gemma_scope_ext.transcoder import GemmaScopeTrainingTranscoderConfig
from gemma_scope_ext.transcoder_eval import TranscoderEvaluator

__all__ = [
    "PairedBatch",
    "TranscoderEvaluator",
    "TranscoderActivationsStore",
    "TranscoderRunnerConfig",
    "TranscoderTrainingRunner",
    "gemma_scope_transcoder_config",
    "split_pairs",
]


class PairedBatch(NamedTuple):
    """One batch of transcoder training pairs, row-aligned."""

    x: Float[Tensor, "batch d_in"]
    """Activations at the input hook (the MLP input after the pre-MLP RMSNorm, pre-gain)."""
    y: Float[Tensor, "batch d_out"]
    """Activations at the output hook (the MLP output after the post-MLP RMSNorm)."""


def split_pairs(packed: Float[Tensor, "batch d_in_plus_d_out"], d_in: int) -> PairedBatch:
    """Split a packed ``[x | y]`` batch (as the store serves it) into input and target."""
    if packed.ndim != 2 or not 0 < d_in < packed.shape[-1]:
        raise ValueError(
            f"expected a packed [batch, d_in + d_out] batch with d_in={d_in} < width, got shape "
            f"{tuple(packed.shape)}; feed the transcoder from TranscoderActivationsStore"
        )
    return PairedBatch(packed[:, :d_in], packed[:, d_in:])


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


class TranscoderActivationsStore(ActivationsStore):
    """An ``ActivationsStore`` that serves (input, target) pairs from one forward pass.

    Built on SAELens's multi-hook mode: both hooks are read from the same forward pass, filtered with
    one special-token mask and shuffled with one permutation, then served packed as
    ``[batch, d_in + d_out]`` so that ``SAETrainer`` can carry them as it carries one hook.
    """

    hook_name_out: str
    d_out: int

    @classmethod
    def create(
        cls,
        model: HookedRootModule,
        dataset: HfDataset | str,
        hook_name: str,
        hook_name_out: str,
        d_in: int,
        d_out: int,
        **store_kwargs: Any,
    ) -> TranscoderActivationsStore:
        """A paired store; ``store_kwargs`` go to ``ActivationsStore.from_config_multi_hook``."""
        if hook_name == hook_name_out:
            raise ValueError(f"input and output hooks are both {hook_name!r}; expected two hooks")
        store = cls.from_config_multi_hook(
            model,
            dataset=dataset,
            hook_names=[hook_name, hook_name_out],
            hook_d_ins={hook_name: d_in, hook_name_out: d_out},
            **store_kwargs,
        )
        assert isinstance(store, cls)
        store.hook_name_out = hook_name_out
        store.d_out = d_out
        return store

    @classmethod
    def from_runner_config(
        cls,
        model: HookedRootModule,
        cfg: TranscoderRunnerConfig,
        override_dataset: HfDataset | None = None,
    ) -> TranscoderActivationsStore:
        """The paired store a ``TranscoderRunnerConfig`` describes (mirrors SAELens's from_config)."""
        if override_dataset is None and cfg.dataset_path == "":
            raise ValueError("no data: pass override_dataset or set dataset_path in the config")
        device = torch.device(str(cfg.act_store_device))
        exclude = cfg.exclude_special_tokens
        if exclude is True:
            exclude = get_special_token_ids(model.tokenizer)  # type: ignore[arg-type]
        exclude_ids = (
            torch.tensor(exclude, dtype=torch.long, device=device) if exclude else None
        )
        return cls.create(
            model,
            dataset=override_dataset or cfg.dataset_path,
            hook_name=cfg.hook_name,
            hook_name_out=cfg.hook_name_out,
            d_in=cfg.sae.d_in,
            d_out=cfg.sae.d_out,
            streaming=cfg.streaming,
            context_size=cfg.context_size,
            n_batches_in_buffer=cfg.n_batches_in_buffer,
            total_training_tokens=cfg.training_tokens,
            store_batch_size_prompts=cfg.store_batch_size_prompts,
            train_batch_size_tokens=cfg.train_batch_size_tokens,
            prepend_bos=cfg.prepend_bos,
            device=device,
            dtype=cfg.dtype,
            model_kwargs=cfg.model_kwargs,
            autocast_lm=cfg.autocast_lm,
            dataset_trust_remote_code=cfg.dataset_trust_remote_code,
            seqpos_slice=cfg.seqpos_slice,
            exclude_special_tokens=exclude_ids,
            disable_concat_sequences=cfg.disable_concat_sequences,
            sequence_separator_token=cfg.sequence_separator_token,
            activations_mixing_fraction=cfg.activations_mixing_fraction,
            use_chat_formatting=cfg.use_chat_formatting,
        )

    def get_data_loader(self) -> Iterator[Tensor]:
        """Packed ``[x | y]`` training batches: what ``next(store)`` and the trainer receive."""
        for pair in self.get_multi_hook_data_loader():
            yield torch.cat([pair[self.hook_name], pair[self.hook_name_out]], dim=-1)

    def next_pair(self) -> PairedBatch:
        """The next training batch, split into input and target."""
        return split_pairs(next(self), self.d_in)


class TranscoderTrainingRunner(LanguageModelSAETrainingRunner):
    """SAELens's ``LanguageModelSAETrainingRunner`` for a transcoder; used the same way::

        runner = TranscoderTrainingRunner(cfg, override_model=model, override_dataset=dataset)
        transcoder = runner.run()

    Only the data and the evaluation change: a paired store replaces the single-hook store, and
    ``TranscoderEvaluator`` replaces SAELens's evaluator. Training, checkpoints and saving are
    SAELens's; the saved folder is a stock ``jumprelu_transcoder``.
    """

    cfg: TranscoderRunnerConfig
    activations_store: TranscoderActivationsStore
    evaluator: TranscoderEvaluator  # type: ignore[assignment]

    def __init__(
        self,
        cfg: TranscoderRunnerConfig,
        override_dataset: HfDataset | None = None,
        override_model: HookedRootModule | None = None,
        override_sae: Any = None,
    ):
        if not isinstance(cfg, TranscoderRunnerConfig):
            raise TypeError(
                f"expected a TranscoderRunnerConfig (it names hook_name_out), got "
                f"{type(cfg).__name__}; build one with gemma_scope_transcoder_config()"
            )
        # The parent builds the model, the training transcoder and a single-hook store; the store
        # (which has read nothing yet) and the evaluator are then replaced by paired ones.
        super().__init__(cfg, override_dataset, override_model, override_sae)
        if getattr(self.sae.cfg, "d_out", None) is None:
            raise TypeError(
                f"the SAE to train is a {type(self.sae).__name__}, not a transcoder; expected a "
                "GemmaScopeTrainingTranscoder"
            )
        self.activations_store = TranscoderActivationsStore.from_runner_config(
            self.model, cfg, override_dataset
        )
        self.evaluator = TranscoderEvaluator(
            model=self.model,
            activations_store=self.activations_store,
            n_eval_batches=cfg.n_eval_batches,
            eval_batch_size_prompts=cfg.eval_batch_size_prompts,
        )

    @override
    def _set_sae_metadata(self) -> None:
        super()._set_sae_metadata()
        self.sae.cfg.metadata.hook_name_out = self.cfg.hook_name_out


def gemma_scope_transcoder_config(
    model_name: str, layer: int, d_sae: int, **overrides: Any
) -> TranscoderRunnerConfig:
    """A runner config for one Gemma Scope transcoder at ``layer``: the recipe, at the MLP.

    Input ``blocks.{layer}.ln2.hook_normalized``, target ``blocks.{layer}.hook_mlp_out``. Defaults and
    ``overrides`` are those of ``gemma_scope_sae_config`` (Adam beta1 0, lr 7e-5, BOS and other
    special tokens excluded, wandb off, fp32); ``d_out`` may be overridden too.
    """
    from gemma_scope_ext.sae_runner_config import gemma_scope_sae_config
    from gemma_scope_ext.sites import hook_name_out, site_d_out

    d_out = overrides.pop("d_out", None) or site_d_out(model_name, "transcoder")
    # The base config's __post_init__ names the run after its SAE and would write that name into a
    # caller's LoggingConfig; it gets its own default logger, and this config names the run.
    logger = overrides.pop("logger", None)
    base = gemma_scope_sae_config(model_name, "transcoder", layer, d_sae, **overrides)
    out_hook = hook_name_out(model_name, "transcoder", layer)
    sae_cfg = GemmaScopeTrainingTranscoderConfig(
        **{f.name: getattr(base.sae, f.name) for f in fields(base.sae) if f.name != "metadata"},
        d_out=d_out,
        metadata=SAEMetadata(hook_name=base.hook_name, hook_name_out=out_hook),
    )
    runner_fields = {f.name: getattr(base, f.name) for f in fields(base) if f.init}
    runner_fields["logger"] = logger or replace(base.logger, run_name=None)
    # __post_init__ appends a fresh id to checkpoint_path; pass the caller's path, not the base's.
    runner_fields["checkpoint_path"] = overrides.get("checkpoint_path", base.checkpoint_path)
    return TranscoderRunnerConfig(**{**runner_fields, "sae": sae_cfg, "hook_name_out": out_hook})
