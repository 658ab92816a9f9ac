"""Transcoder training pairs from one forward pass: SAELens's multi-hook store, served packed.

SAELens's ``SAETrainer`` moves, counts and scales one activation tensor per step. A transcoder needs a
pair (MLP input, MLP output) from the same tokens, so the store here captures both hooks in one
forward pass with SAELens's multi-hook loader (one shuffle permutation for both, one special-token
mask for both) and serves them packed side by side, ``[x | y]``; the training transcoder splits them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from jaxtyping import Float
from sae_lens.config import HfDataset
from sae_lens.training.activations_store import ActivationsStore
from sae_lens.util import get_special_token_ids
from torch import Tensor
from transformer_lens import HookedRootModule

if TYPE_CHECKING:
    from gemma_scope_ext.training.runner_config import TranscoderRunnerConfig

__all__ = ["PairedBatch", "TranscoderActivationsStore", "split_pairs"]


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


