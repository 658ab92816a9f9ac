"""Evaluating a transcoder while SAELens's runner trains it: the splice at the MLP output.

SAELens's ``run_evals`` encodes and splices at the input hook and so reports wrong numbers for a
transcoder; ``TranscoderEvaluator`` takes its place in ``TranscoderTrainingRunner`` and calls
``gemma_scope_ext.evals.metrics.evaluate``, which reads ``hook_name`` and splices at ``hook_name_out``.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Int
from sae_lens.training.prefetch import PrefetchingIterator
from torch import Tensor
from transformer_lens import HookedRootModule

from gemma_scope_ext.evals.metrics import EvalResult, evaluate

if TYPE_CHECKING:
    from gemma_scope_ext.training.paired_store import TranscoderActivationsStore

__all__ = ["TranscoderEvaluator"]


@dataclass
class TranscoderEvaluator:
    """The runner's evaluator: splices the transcoder at ``hook_name_out`` with ``evaluate``.

    SAELens's ``run_evals`` would encode and splice at the input hook and report wrong numbers for a
    transcoder; this measures delta LM loss, FVU against the target, L0, and the losses with the MLP
    output zero- and mean-ablated, on token batches drawn from the training store.
    """

    model: HookedRootModule
    """The language model the transcoder is spliced into."""
    activations_store: TranscoderActivationsStore
    """Store whose token stream supplies the evaluation rows (as for SAELens's evaluator)."""
    n_eval_batches: int
    """Batches of prompts per evaluation."""
    eval_batch_size_prompts: int | None
    """Prompts per batch; None uses the store's batch size."""

    def __post_init__(self) -> None:
        if self.n_eval_batches < 1:
            raise ValueError(f"n_eval_batches must be >= 1, got {self.n_eval_batches}")

    @property
    def batch_size(self) -> int:
        """Prompts per evaluation batch."""
        return self.eval_batch_size_prompts or self.activations_store.store_batch_size_prompts

    def eval_tokens(self) -> Int[Tensor, "n_seqs context"]:
        """The next ``n_eval_batches`` batches of rows from the store's token stream."""
        store = self.activations_store
        return torch.cat([store.get_batch_tokens(self.batch_size) for _ in range(self.n_eval_batches)])

    @torch.no_grad()
    def evaluate(self, transcoder: Any, tokens: Tensor | None = None) -> EvalResult:
        """The full ``EvalResult`` for ``transcoder`` on ``tokens`` (default: fresh store rows).

        Special tokens are those the store excludes, or BOS/EOS/pad when it excludes none.
        """
        store = self.activations_store
        meta = transcoder.cfg.metadata
        for key, hook in (("hook_name", store.hook_name), ("hook_name_out", store.hook_name_out)):
            if meta.get(key) is None:
                meta[key] = hook  # trained on the store's hooks, so that is where it belongs
            elif meta[key] != hook:
                raise ValueError(
                    f"the transcoder's metadata.{key} is {meta[key]!r} but the store reads "
                    f"{hook!r}; evaluate it with a store for its own hooks"
                )
        tokens = self.eval_tokens() if tokens is None else tokens
        excluded = store.exclude_special_tokens
        return evaluate(
            self.model, transcoder, tokens, batch_size=self.batch_size, progress=False,
            special_token_ids=None if excluded is None else excluded.tolist(),
        )  # fmt: skip

    def __call__(
        self, sae: Any, data_provider: Any = None, activation_scaler: Any = None
    ) -> dict[str, Any]:
        """SAELens's evaluator interface: metrics by wandb key."""
        # A prefetching data provider reads the same store from a thread; pause it meanwhile.
        paused = isinstance(data_provider, PrefetchingIterator)
        with data_provider.paused() if paused else nullcontext():
            r = self.evaluate(sae)
        return {
            "model_performance_preservation/ce_loss_without_sae": r.clean_loss,
            "model_performance_preservation/ce_loss_with_sae": r.spliced_loss,
            "model_performance_preservation/ce_loss_with_ablation": r.zero_ablation_loss,
            "model_performance_preservation/ce_loss_with_mean_ablation": r.mean_ablation_loss,
            "model_performance_preservation/delta_ce_loss": r.delta_loss,
            "model_performance_preservation/ce_loss_score": r.loss_recovered,
            "reconstruction_quality/fvu": r.fvu,
            "reconstruction_quality/explained_variance": r.explained_variance,
            "reconstruction_quality/mse": r.mse,
            "sparsity/eval_l0": r.l0,
            "sparsity/eval_frac_dead": r.frac_dead,
        }
