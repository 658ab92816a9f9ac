"""Reading an activation cache for training: shards in a shuffled order, checked before use.

``CacheSource`` is a ``ChunkSource``: chunk ``i`` is shard ``order(epoch)[i mod n]``, where each
epoch's order is a permutation drawn from the seed (or row order with ``shuffle=False``), so a
position number is all a checkpoint needs. ``shards`` limits a source to some of the shards (the
disjoint share of one data stream of a distributed run). Shards are memory-mapped by safetensors; each is checked
(size, SHA-256, model, hooks, dtype) the first time it is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors import safe_open
from torch import Tensor

from gemma_scope_ext.activations.cache_format import read_cache_manifest, verify_shard

__all__ = ["CacheSource"]


class CacheSource:
    """Packed ``[rows, sum of widths]`` chunks of ``hooks`` from the cache at ``path``."""

    def __init__(self, path: str | Path, hooks: Sequence[str], model_name: str | None = None,
                 seed: int = 0, widths: dict[str, int] | None = None,
                 dtype: torch.dtype = torch.float32, shuffle: bool = True,
                 shards: Sequence[int] | None = None) -> None:  # fmt: skip
        self.folder = Path(path)
        self.manifest = read_cache_manifest(self.folder)
        m = self.manifest
        if model_name is not None and m["model_name"] != model_name:
            raise ValueError(f"the cache at {path} holds activations of {m['model_name']!r}, "
                             f"not {model_name!r}")  # fmt: skip
        lacking = [h for h in hooks if h not in m["hooks"]]
        if lacking:
            raise ValueError(f"the cache at {path} lacks hooks {lacking}; it holds {m['hooks']}. "
                             "Harvest them too, or drop the entries that need them")  # fmt: skip
        for h, w in (widths or {}).items():
            if h in m["widths"] and m["widths"][h] != w:
                raise ValueError(f"d_in mismatch at {h}: the cache holds width {m['widths'][h]}, "
                                 f"the entry expects {w}")  # fmt: skip
        if not m["shards"]:
            raise ValueError(f"the cache at {path} has no finished shard; run the harvest first")
        self.hooks, self.seed, self.dtype, self.shuffle = list(hooks), seed, dtype, shuffle
        self.shards = list(range(len(m["shards"])) if shards is None else shards)
        bad = [i for i in self.shards if not 0 <= i < len(m["shards"])]
        if bad or not self.shards:
            raise ValueError(f"shards {bad} out of range or none chosen: the cache at {path} has "
                             f"{len(m['shards'])} finished shards")  # fmt: skip
        self.n = len(self.shards)
        self.position = 0
        self._verified: set[int] = set()
        self._order: tuple[int, Tensor] | None = None

    def order(self, epoch: int) -> Tensor:
        """Positions in ``shards`` in the order epoch ``epoch`` reads them."""
        if self._order is None or self._order[0] != epoch:
            if self.shuffle:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._order = (epoch, torch.randperm(self.n, generator=gen))
            else:
                self._order = (epoch, torch.arange(self.n))
        return self._order[1]

    def read_shard(self, index: int) -> Float[Tensor, "rows width"]:
        """Shard ``index``'s rows of the requested hooks, side by side."""
        record = self.manifest["shards"][index]
        if index not in self._verified:
            verify_shard(self.folder, record, self.manifest)
            self._verified.add(index)
        with safe_open(str(self.folder / record["file"]), "pt") as f:
            parts = [f.get_tensor(h) for h in self.hooks]
        return torch.cat(parts, dim=1).to(self.dtype)

    def next_chunk(self) -> Float[Tensor, "rows width"]:
        epoch, i = divmod(self.position, self.n)
        self.position += 1
        return self.read_shard(self.shards[int(self.order(epoch)[i])])

    def seek(self, position: int) -> None:
        self.position = position
