"""A mixing buffer with its own random generator and a state that a checkpoint can hold.

SAELens's ``mixing_buffer`` (same policy: fill to ``buffer_size``, shuffle, serve all but a kept
fraction in whole batches) draws from the global RNG and keeps its contents in a generator frame,
so a resumed run cannot continue it. Here the contents, the batches not yet served, the generator
and the source's position are plain tensors and numbers (:meth:`MixingBuffer.state_dict`), so a run
restarted from a checkpoint serves exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["ChunkSource", "MixingBuffer"]


class ChunkSource(Protocol):
    """Where packed activation rows come from (the live model or a cache)."""

    position: int
    """Chunks served so far; ``seek`` returns to any such position."""

    def next_chunk(self) -> Float[Tensor, "rows width"]:
        """The next block of packed rows (sources cycle: they never run out)."""
        ...

    def seek(self, position: int) -> None:
        """Continue from ``position`` (as saved in a checkpoint)."""
        ...


class MixingBuffer:
    """Shuffled training batches of ``batch_size`` rows drawn from a ``ChunkSource``."""

    def __init__(self, source: ChunkSource, buffer_size: int, batch_size: int,
                 mix_fraction: float, seed: int) -> None:  # fmt: skip
        if buffer_size < batch_size or not 0 <= mix_fraction < 1:
            raise ValueError(f"need buffer_size >= batch_size and 0 <= mix_fraction < 1, got "
                             f"{buffer_size}, {batch_size}, {mix_fraction}")  # fmt: skip
        self.source, self.buffer_size, self.batch_size = source, buffer_size, batch_size
        self.mix_fraction = mix_fraction
        self.generator = torch.Generator().manual_seed(seed)
        self.storage: Tensor | None = None
        self.serving: Tensor | None = None
        self.served = 0

    def next_batch(self) -> Float[Tensor, "batch width"]:
        """The next training batch."""
        if self.serving is None or self.served == len(self.serving) // self.batch_size:
            self._refill()
        assert self.serving is not None
        start = self.served * self.batch_size
        self.served += 1
        return self.serving[start : start + self.batch_size]

    def _refill(self) -> None:
        parts = [] if self.storage is None else [self.storage]
        while sum(len(p) for p in parts) < self.buffer_size:
            parts.append(self.source.next_chunk())
        storage = torch.cat(parts)
        if self.mix_fraction > 0:
            storage = storage[torch.randperm(len(storage), generator=self.generator)]
        keep = int(self.buffer_size * self.mix_fraction)
        cut = max(1, (len(storage) - keep) // self.batch_size) * self.batch_size
        self.serving, self.storage, self.served = storage[:cut], storage[cut:], 0

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: contents, unserved batches, generator, source position."""
        empty = torch.empty(0)
        return {
            "storage": empty if self.storage is None else self.storage.clone(),
            "serving": empty if self.serving is None else self.serving.clone(),
            "served": self.served,
            "has_serving": self.serving is not None,
            "generator": self.generator.get_state(),
            "source_position": self.source.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``'s output."""
        self.storage = state["storage"] if state["has_serving"] else None
        self.serving = state["serving"] if state["has_serving"] else None
        self.served = int(state["served"])
        self.generator.set_state(state["generator"])
        self.source.seek(int(state["source_position"]))
