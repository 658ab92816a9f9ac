"""Training with the Gemma Scope recipe: training classes, configs, runner configs, paired store,
checks made before a run and while it runs, saving."""

from gemma_scope_ext.training.config import GemmaScopeTrainingSAEConfig
from gemma_scope_ext.training.decoder_grad import remove_parallel_grad
from gemma_scope_ext.training.distributed import RankLostError
from gemma_scope_ext.training.divergence import TrainingDivergedError
from gemma_scope_ext.training.paired_store import (
    PairedBatch,
    TranscoderActivationsStore,
    split_pairs,
)
from gemma_scope_ext.training.runner_config import (
    TranscoderRunnerConfig,
    gemma_scope_sae_config,
    gemma_scope_token_budget,
    gemma_scope_transcoder_config,
)
from gemma_scope_ext.training.sae import GemmaScopeTrainingSAE
from gemma_scope_ext.training.saving import save_sae_files
from gemma_scope_ext.training.skip_transcoder import (
    GemmaScopeTrainingSkipTranscoder,
    GemmaScopeTrainingSkipTranscoderConfig,
)
from gemma_scope_ext.training.sparsity import sparsity_penalty
from gemma_scope_ext.training.suite_config import SuiteConfig, SuiteEntry, suite_entries
from gemma_scope_ext.training.suite_runner import SuiteTrainingRunner, entry_trainer
from gemma_scope_ext.training.transcoder import (
    GemmaScopeTrainingTranscoder,
    GemmaScopeTrainingTranscoderConfig,
)
from gemma_scope_ext.training.transcoder_eval import TranscoderEvaluator
from gemma_scope_ext.training.transcoder_runner import TranscoderTrainingRunner

__all__ = [
    "GemmaScopeTrainingSAE",
    "GemmaScopeTrainingSAEConfig",
    "GemmaScopeTrainingSkipTranscoder",
    "GemmaScopeTrainingSkipTranscoderConfig",
    "GemmaScopeTrainingTranscoder",
    "GemmaScopeTrainingTranscoderConfig",
    "PairedBatch",
    "RankLostError",
    "SuiteConfig",
    "SuiteEntry",
    "SuiteTrainingRunner",
    "entry_trainer",
    "suite_entries",
    "TranscoderActivationsStore",
    "TranscoderEvaluator",
    "TranscoderRunnerConfig",
    "TrainingDivergedError",
    "TranscoderTrainingRunner",
    "gemma_scope_sae_config",
    "gemma_scope_token_budget",
    "gemma_scope_transcoder_config",
    "remove_parallel_grad",
    "save_sae_files",
    "sparsity_penalty",
    "split_pairs",
]
