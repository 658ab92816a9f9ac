"""A suite's processes under ``torchrun``: who this rank is, what it owns, and checked collectives.

``Topology`` says which data streams and entries a rank owns. The global batch of every step is
the concatenation, in stream order, of one batch from each of ``data_streams`` independent streams
(their own cache shards or token rows, their own mixing buffer and seed); a rank owns a contiguous
run of streams. The result of a suite therefore depends on ``data_streams`` but not on how many
processes share them: two ranks with two streams train the weights one process with two streams
trains.

``Comm`` wraps the few collectives a suite uses. It counts the bytes each rank sends and turns a
failed collective (a peer that died, was killed or timed out) into :class:`RankLostError`, which
says so and where the last checkpoint is, instead of a bare backend error or a hang.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "Comm",
    "RankLostError",
    "Topology",
    "assign_entries",
    "check_same_config",
    "check_shared_folder",
    "start",
]


class RankLostError(RuntimeError):
    """A collective failed: another rank of the job died, was killed or stopped answering."""


@dataclass(frozen=True)
class Topology:
    """This process's place in the job."""

    rank: int
    """Global rank (0 writes the manifest, metrics and checkpoint index)."""
    world_size: int
    """Number of processes."""
    local_rank: int
    """Rank on this machine (picks the GPU)."""
    data_streams: int
    """Independent data streams the global batch is drawn from (a multiple of ``world_size``)."""

    @property
    def streams(self) -> range:
        """The streams this rank reads."""
        k = self.data_streams // self.world_size
        return range(self.rank * k, (self.rank + 1) * k)

    @property
    def writer(self) -> bool:
        """Whether this rank writes the suite's shared files."""
        return self.rank == 0

    def device(self, device: str) -> str:
        """``device`` for this rank: plain ``cuda`` becomes this rank's GPU."""
        return f"cuda:{self.local_rank}" if device == "cuda" else device


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer; "
                         "launch with torchrun, which sets it") from None  # fmt: skip


def start(data_streams: int | None, device: str, timeout_s: float) -> tuple[Topology, Comm | None]:
    """This process's topology, joining torchrun's process group when ``WORLD_SIZE`` > 1.

    The backend is nccl for CUDA devices and gloo otherwise; ``timeout_s`` bounds every collective.
    """
    world = dist.get_world_size() if dist.is_initialized() else _env_int("WORLD_SIZE", 1)
    streams = data_streams or world
    if streams % world:
        raise ValueError(f"data_streams={streams} must be a multiple of the number of processes "
                         f"({world}): each process reads the same number of streams")  # fmt: skip
    if world == 1:
        return Topology(0, 1, 0, streams), None
    local = _env_int("LOCAL_RANK", 0)
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    topo = Topology(dist.get_rank(), world, local, streams)
    nccl = dist.get_backend() == "nccl"
    return topo, Comm(topo, torch.device(f"cuda:{local}") if nccl else torch.device("cpu"))


class Comm:
    """The collectives of a suite, with a count of bytes sent and clear errors."""

    def __init__(self, topology: Topology, device: torch.device | None = None) -> None:
        self.topology = topology
        self.device = device or torch.device("cpu")
        """Where the backend wants tensors (nccl: this rank's GPU); others are moved there."""
        self.bytes_sent = 0
        """Payload bytes this rank has sent (ring all-reduce: 2(W-1)/W of the tensor)."""
        self.where = "start-up"
        """What the job was doing, for error messages (the runner updates it)."""

    def _run(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (RuntimeError, dist.DistError) as e:
            t = self.topology
            raise RankLostError(
                f"rank {t.rank} of {t.world_size}: {what} failed during {self.where} ({e}). "
                "Another rank has probably died or been killed (its own log says why) or stopped "
                "answering; finished entries and the latest checkpoint are intact: rerun the same "
                "command to resume"
            ) from e

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks, in place."""
        w = self.topology.world_size
        self.bytes_sent += 2 * (w - 1) * tensor.numel() * tensor.element_size() // w
        here = tensor.to(self.device)
        self._run("all_reduce", dist.all_reduce, here)
        if here is not tensor:
            tensor.copy_(here)
        return tensor

    def all_to_all(self, parts: list[torch.Tensor], shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        """Send ``parts[r]`` to rank ``r``; returns what each rank sent here (of ``shapes[r]``).

        One ``all_to_all_single`` of the flattened parts, so that the parts may differ in size
        (gloo's list form needs equal sizes)."""
        me = self.topology.rank
        self.bytes_sent += sum(p.numel() * p.element_size() for r, p in enumerate(parts) if r != me)
        sizes = [math.prod(s) for s in shapes]
        out = torch.empty(sum(sizes), dtype=parts[me].dtype, device=self.device)
        send = torch.cat([p.reshape(-1) for p in parts]).to(self.device)
        self._run("all_to_all", dist.all_to_all_single, out, send, sizes, [p.numel() for p in parts])
        return [o.view(s) for o, s in zip(out.split(sizes), shapes, strict=True)]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (small, picklable), in rank order."""
        out: list[Any] = [None] * self.topology.world_size
        self._run("all_gather_object", dist.all_gather_object, out, obj)
        return out

    def barrier(self) -> None:
        """Wait for every rank."""
        self._run("barrier", dist.barrier)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def check_same_config(comm: Comm, settings: dict[str, Any]) -> None:
    """Refuse to start unless every rank was given the same suite settings."""
    everyone = comm.all_gather_object(settings)
    if len({_digest(s) for s in everyone}) == 1:
        return
    mine = comm.topology.rank
    lines = []
    for r, theirs in enumerate(everyone):
        keys = sorted(k for k in set(theirs) | set(everyone[0])
                      if _digest(theirs.get(k)) != _digest(everyone[0].get(k)))  # fmt: skip
        if keys:
            lines.append(f"rank {r} differs from rank 0 in {', '.join(keys)}")
    raise ValueError(f"rank {mine}: the ranks of this job were given different suites ("
                     f"{'; '.join(lines)}); every rank must read the same suite file")  # fmt: skip


def check_shared_folder(comm: Comm, folder: Path) -> None:
    """Refuse to start unless every rank sees the output folder rank 0 writes (a shared disk)."""
    token = uuid.uuid4().hex if comm.topology.writer else None
    token = comm.all_gather_object(token)[0]
    probe = folder / f".rank-probe-{token}"
    if comm.topology.writer:
        probe.write_text(token)
    comm.barrier()
    seen = probe.is_file() and probe.read_text() == token
    blind = [r for r, ok in enumerate(comm.all_gather_object(seen)) if not ok]
    if comm.topology.writer:
        probe.unlink()
    if blind:
        raise ValueError(f"ranks {blind} cannot see {folder} as rank 0 writes it: output_path must "
                         "be a folder every rank shares (the same disk or a shared filesystem)")  # fmt: skip


def assign_entries(costs: list[float], groups: list[Any], world_size: int) -> list[int]:
    """A rank for each entry: whole groups (entries reading the same hooks) where there are at
    least as many groups as ranks, else single entries, largest first onto the least-loaded rank."""
    n = len(costs)
    units: dict[Any, list[int]] = {}
    if len(set(groups)) >= world_size:
        for i, g in enumerate(groups):
            units.setdefault(g, []).append(i)
    else:
        units = {i: [i] for i in range(n)}
    load = [0.0] * world_size
    rank = [0] * n
    for members in sorted(units.values(), key=lambda m: (-sum(costs[i] for i in m), m[0])):
        r = min(range(world_size), key=lambda k: (load[k], k))
        load[r] += sum(costs[i] for i in members)
        for i in members:
            rank[i] = r
    return rank
