"""How a suite's ranks share the work: one process, data parallel, or distributed entries.

Every mode sees the same global batch per step (``suite_streams.py``) and so trains the same
weights:

- ``Single``: one process trains every entry on every row.
- ``DataParallel``: every rank trains every entry on its own rows. Each entry's gradients are
  averaged over ranks at the end of its backward pass (one all-reduce of all its gradients, before
  SAELens clips and steps), the recipe's input scales are computed from every rank's first batch,
  and the dead-latent counters, firing counts and sample counts are summed over ranks after every
  step, so optimiser, schedules and statistics equal one process's on the whole batch.
- ``DistributedEntries``: each rank trains some entries on the whole batch. Each rank sends every
  other rank, of its own rows, only the hooks that rank's entries read (one all-to-all per step);
  nothing else is exchanged but losses for logging and finished entries' records.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from gemma_scope_ext.training.distributed import Comm, Topology, assign_entries
from gemma_scope_ext.training.suite_config import SuiteConfig, SuiteEntry

__all__ = ["DataParallel", "DistributedEntries", "Single", "fvu", "make_parallel"]


def fvu(parts: Tensor) -> float:
    """Fraction of variance unexplained from ``fvu_parts`` (summed over rows, maybe over ranks)."""
    sse, sq, n, total = parts[0], parts[1], parts[2], parts[3:]
    return float(sse / (sq - total.pow(2).sum() / n))


def fvu_parts(target: Tensor, recon: Tensor) -> Tensor:
    """Sums that ``fvu`` needs: squared error, squared norm, rows, per-column sums (float64)."""
    t, r = target.double(), recon.double()
    head = torch.stack([(r - t).pow(2).sum(), t.pow(2).sum(), t.new_tensor(float(len(t)))])
    return torch.cat([head, t.sum(0)])


class Single:
    """One process: every entry, every row, nothing exchanged."""

    def __init__(self, topology: Topology, comm: Comm | None, cfg: SuiteConfig) -> None:
        self.topology, self.comm, self.cfg = topology, comm, cfg

    def owns(self, entries: list[SuiteEntry]) -> list[SuiteEntry]:
        """The entries this rank trains."""
        return entries

    def writes_entries(self, topology: Topology) -> bool:
        """Whether this rank saves the entries it trains (and their checkpoint state)."""
        return True

    def batch_hooks(self, hooks: list[str], owned: list[SuiteEntry]) -> list[str]:
        """The hooks whose columns this rank's training batches hold, in order."""
        return hooks

    def exchange(self, local: Tensor) -> Tensor:
        """This rank's training batch from its rows of the global batch."""
        return local

    def prepare(self, trainer: Any) -> None:
        """Set up ``trainer`` before its first step."""

    def before_step(self, trainer: Any, batch: Tensor) -> Any:
        """Called before ``trainer.step(batch)``; what it returns goes to ``after_step``."""
        return None

    def after_step(self, trainer: Any, token: Any, rows: int) -> None:
        """Called after ``trainer.step`` on ``rows`` rows."""

    def losses(self, local: dict[str, float]) -> dict[str, float]:
        """Every entry's loss of this step (for the writer's log)."""
        return local

    def finish_metrics(self, target: Tensor, recon: Tensor) -> float:
        """FVU of the last batch an entry trained on."""
        return fvu(fvu_parts(target, recon))

    def records(self, local: list[dict[str, Any]], any_finished: bool) -> list[dict[str, Any]]:
        """Manifest records of the entries that finished this step, for the writer."""
        return local


class DataParallel(Single):
    """Every rank trains every entry on its own rows; gradients and statistics are all-reduced."""

    def writes_entries(self, topology: Topology) -> bool:
        return topology.writer  # every rank holds the same weights

    def prepare(self, trainer: Any) -> None:
        params = [p for p in trainer.sae.parameters() if p.requires_grad]
        comm, world = self.comm, self.topology.world_size
        assert comm is not None
        queued = [False]

        def reduce_all() -> None:
            queued[0] = False
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = comm.all_reduce_(_flatten_dense_tensors(grads)).div_(world)
            for p, g in zip(params, _unflatten_dense_tensors(flat, grads), strict=True):
                p.grad = g

        def hook(_: Tensor) -> None:
            if not queued[0]:  # once per backward pass, run after every gradient is in
                queued[0] = True
                torch.autograd.Variable._execution_engine.queue_callback(reduce_all)

        for p in params:
            p.register_post_accumulate_grad_hook(hook)

    def before_step(self, trainer: Any, batch: Tensor) -> Any:
        sae = trainer.sae
        if hasattr(sae, "scales_fixed") and not bool(sae.scales_fixed):
            self._global_scales(sae, batch)
        return trainer.act_freq_scores.clone()

    def _global_scales(self, sae: Any, batch: Tensor) -> None:
        """The recipe's scales, E[||x||^2] = 1 over the global first batch (not this rank's)."""
        assert self.comm is not None
        x, target = sae.training_batch(batch.to(sae.device))
        sums = torch.stack([x.double().pow(2).sum(), target.double().pow(2).sum(),
                            x.new_tensor(float(len(x)), dtype=torch.float64)])  # fmt: skip
        sx, st, n = self.comm.all_reduce_(sums).tolist()
        for name, total in (("input_scale", sx), ("target_scale", st)):
            mean_sq = total / n
            if not math.isfinite(mean_sq) or mean_sq <= 0:
                raise ValueError(f"cannot scale inputs to unit mean squared norm: the global "
                                 f"batch's E[||x||^2] is {mean_sq}; expected a positive finite "
                                 "value (is the hook producing zeros or NaNs?)")  # fmt: skip
            getattr(sae, name).fill_(mean_sq**-0.5)
        sae.scales_fixed.fill_(True)

    def after_step(self, trainer: Any, token: Any, rows: int) -> None:
        assert self.comm is not None
        before: Tensor = token
        fired_here = (trainer.n_forward_passes_since_fired == 0).to(before.dtype)
        both = self.comm.all_reduce_(torch.cat([trainer.act_freq_scores - before, fired_here]))
        d = len(before)
        trainer.act_freq_scores = before + both[:d]
        trainer.n_forward_passes_since_fired[both[d:] > 0] = 0
        trainer.n_training_samples += (self.topology.world_size - 1) * rows

    def losses(self, local: dict[str, float]) -> dict[str, float]:
        assert self.comm is not None
        names = sorted(local)
        values = torch.tensor([local[n] for n in names], dtype=torch.float64)
        mean = self.comm.all_reduce_(values).div_(self.topology.world_size)
        return dict(zip(names, mean.tolist(), strict=True))

    def finish_metrics(self, target: Tensor, recon: Tensor) -> float:
        assert self.comm is not None
        return fvu(self.comm.all_reduce_(fvu_parts(target, recon)))


class DistributedEntries(Single):
    """Each rank trains its share of the entries on the whole batch."""

    def __init__(self, topology: Topology, comm: Comm | None, cfg: SuiteConfig) -> None:
        super().__init__(topology, comm, cfg)
        self.rank_of: dict[str, int] = {}
        self.needs: list[list[str]] = []

    def owns(self, entries: list[SuiteEntry]) -> list[SuiteEntry]:
        cfg, widths = self.cfg, self.cfg.hook_widths()
        costs = [widths[e.hooks(cfg.model_name)[0]] * e.d_sae * cfg.entry_tokens(e) for e in entries]
        groups = [e.hooks(cfg.model_name) for e in entries]
        ranks = assign_entries(costs, groups, self.topology.world_size)
        self.rank_of = {e.name: r for e, r in zip(entries, ranks, strict=True)}
        return [e for e in entries if self.rank_of[e.name] == self.topology.rank]

    def batch_hooks(self, hooks: list[str], owned: list[SuiteEntry]) -> list[str]:
        entries = {e.name: e for e in self.cfg.entries}
        self.hooks, self.widths = hooks, self.cfg.hook_widths()
        self.needs = [[h for h in hooks if any(h in entries[n].hooks(self.cfg.model_name)
                                               for n, r in self.rank_of.items() if r == rank)]
                      for rank in range(self.topology.world_size)]  # fmt: skip
        return self.needs[self.topology.rank]

    def exchange(self, local: Tensor) -> Tensor:
        assert self.comm is not None
        start, columns = 0, {}
        for h in self.hooks:
            columns[h] = (start, start + self.widths[h])
            start += self.widths[h]
        parts = []
        for needed in self.needs:
            cols = [local[:, slice(*columns[h])] for h in needed]
            parts.append(torch.cat(cols, 1) if cols else local[:, :0])
        mine = sum(self.widths[h] for h in self.needs[self.topology.rank])
        shapes = [(len(local), mine)] * self.topology.world_size  # every rank has equal rows
        return torch.cat(self.comm.all_to_all(parts, shapes))

    def losses(self, local: dict[str, float]) -> dict[str, float]:
        assert self.comm is not None
        return {k: v for part in self.comm.all_gather_object(local) for k, v in part.items()}

    def records(self, local: list[dict[str, Any]], any_finished: bool) -> list[dict[str, Any]]:
        assert self.comm is not None
        if not any_finished:
            return local
        return [r for part in self.comm.all_gather_object(local) for r in part]


MODES = {"data_parallel": DataParallel, "entries": DistributedEntries}


def make_parallel(topology: Topology, comm: Comm | None, cfg: SuiteConfig) -> Single:
    """The strategy for ``cfg.distributed`` (one process: ``Single`` whatever the setting)."""
    if comm is None:
        return Single(topology, comm, cfg)
    return MODES[cfg.distributed](topology, comm, cfg)
