"""Training Gemma Scope transcoders with SAELens's own runner and trainer.

Only the data and the evaluation differ from an SAE run: ``TranscoderActivationsStore`` serves
(input, target) pairs from one forward pass, and ``TranscoderEvaluator`` splices at the MLP output.
Everything else (optimiser, schedules, checkpoints, saving) is SAELens's, unchanged.

SAELens's trainer calls the runner's evaluator only when it logs to wandb; ``TranscoderEvaluator``
can also be called directly.
"""

from __future__ import annotations

from typing import Any

from sae_lens.config import HfDataset
from sae_lens.llm_sae_training_runner import LanguageModelSAETrainingRunner
from transformer_lens import HookedRootModule
from typing_extensions import override

from gemma_scope_ext.models.families import get_spec
from gemma_scope_ext.training.checks import check_against_model, check_run_settings
from gemma_scope_ext.training.paired_store import TranscoderActivationsStore
from gemma_scope_ext.training.runner_config import TranscoderRunnerConfig
from gemma_scope_ext.training.transcoder_eval import TranscoderEvaluator

__all__ = ["TranscoderTrainingRunner"]


class TranscoderTrainingRunner(LanguageModelSAETrainingRunner):
    """SAELens's ``LanguageModelSAETrainingRunner`` for a transcoder; used the same way::

        runner = TranscoderTrainingRunner(cfg, override_model=model, override_dataset=dataset)
        transcoder = runner.run()

    Only the data and the evaluation change: a paired store replaces the single-hook store, and
    ``TranscoderEvaluator`` replaces SAELens's evaluator. Training, checkpoints and saving are
    SAELens's; the saved folder is a stock ``jumprelu_transcoder``.

    The settings are checked before the model is loaded (see ``training/checks.py``), and the
    hooks, their widths and the context size against the model before any activation is read.
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
        settings = {f: getattr(cfg, f) for f in (
            "training_tokens", "train_batch_size_tokens", "context_size", "n_batches_in_buffer",
            "store_batch_size_prompts", "seqpos_slice", "lr", "hook_name", "hook_name_out",
            "output_path")}  # fmt: skip
        try:
            spec = get_spec(override_model if override_model is not None else cfg.model_name)
        except ValueError:  # a model this package has no table for: checked once loaded
            spec = None
        check_run_settings(settings, spec, bool(getattr(cfg.sae, "overwrite_saved", False)))
        # The parent builds the model, the training transcoder and a single-hook store; the store
        # (which has read nothing yet) and the evaluator are then replaced by paired ones.
        super().__init__(cfg, override_dataset, override_model, override_sae)
        check_against_model(
            self.model, {cfg.hook_name: cfg.sae.d_in, cfg.hook_name_out: cfg.sae.d_out},
            cfg.context_size,
        )  # fmt: skip
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
