"""A rank's data streams: one mixing buffer per stream, one batch from each per step.

The global batch of a step is the concatenation, in stream order, of a batch of
``train_batch_size_tokens / data_streams`` rows from every stream; a rank serves the part that
its own streams make (``Topology.streams``), so the job's global batch does not depend on how many
ranks share the streams.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from gemma_scope_ext.activations.buffer import ChunkSource, MixingBuffer
from gemma_scope_ext.training.suite_config import SuiteConfig
from gemma_scope_ext.training.suite_sources import stream_seed

__all__ = ["StreamSet"]


class StreamSet:
    """Batches from ``sources`` (stream index -> source), side by side in stream order."""

    def __init__(self, cfg: SuiteConfig, sources: dict[int, ChunkSource], n_streams: int) -> None:
        rows = cfg.train_batch_size_tokens // n_streams
        self.buffers = {
            s: MixingBuffer(src, cfg.n_batches_in_buffer * rows, rows, cfg.mix_fraction,
                            stream_seed(cfg.seed, s))  # fmt: skip
            for s, src in sorted(sources.items())
        }

    def next_batch(self) -> Float[Tensor, "rows width"]:
        """This rank's rows of the next global batch."""
        parts = [b.next_batch() for b in self.buffers.values()]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def state_dict(self) -> dict[int, dict[str, Any]]:
        """Each stream's buffer state, by stream index."""
        return {s: b.state_dict() for s, b in self.buffers.items()}

    def load_state_dict(self, states: dict[int, dict[str, Any]]) -> None:
        """Continue every stream from ``state_dict()``'s output."""
        for s, b in self.buffers.items():
            b.load_state_dict(states[s])
