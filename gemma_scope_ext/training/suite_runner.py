"""Training a suite: every entry fed from one stream of packed activations, one LM pass per batch.

Each entry is the recipe's training class driven by its own SAELens ``SAETrainer`` (its own Adam,
learning-rate and lambda schedules, input/target scalars and dead-latent counters), stepped as
``SAETrainer.fit`` steps it; the runner only routes each batch's columns to the entries that read
them (a transcoder gets its input and target hooks side by side, as ``TranscoderActivationsStore``
serves them). The activations come from the model (``LiveSource``: one forward per batch of rows,
stopped after the deepest block any entry reads) or from a cache (``CacheSource``), through a
``MixingBuffer`` per data stream whose state checkpoints hold.

Under ``torchrun`` the same suite runs on every rank, data parallel or with the entries shared out
(``suite_parallel.py``); rank 0 writes the manifest, metrics and checkpoint index.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist
from sae_lens.training.sae_trainer import SAETrainer
from tqdm.auto import tqdm

from gemma_scope_ext.activations.buffer import ChunkSource
from gemma_scope_ext.files import check_writable_dir
from gemma_scope_ext.training.distributed import (
    Comm,
    Topology,
    check_same_config,
    check_shared_folder,
    start,
)
from gemma_scope_ext.training.runner_config import (
    gemma_scope_sae_config,
    gemma_scope_transcoder_config,
)
from gemma_scope_ext.training.suite_config import SuiteConfig, SuiteEntry
from gemma_scope_ext.training.suite_parallel import Single, make_parallel
from gemma_scope_ext.training.suite_state import (
    begin_checkpoint,
    commit_checkpoint,
    load_checkpoint,
    read_manifest,
    write_checkpoint_part,
    write_manifest,
)
from gemma_scope_ext.training.suite_streams import StreamSet

__all__ = ["SuiteTrainingRunner", "entry_trainer"]


def entry_trainer(cfg: SuiteConfig, entry: SuiteEntry) -> SAETrainer:
    """The entry's training SAE (initialised from ``entry.seed``) and its stock ``SAETrainer``."""
    settings = dict(
        l0_coefficient=entry.l0_coefficient, l0_warm_up_steps=entry.l0_warm_up_steps,
        training_tokens=cfg.entry_tokens(entry), train_batch_size_tokens=cfg.train_batch_size_tokens,
        lr=cfg.lr, lr_warm_up_steps=cfg.lr_warm_up_steps, adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2, dead_feature_window=cfg.dead_feature_window,
        feature_sampling_window=cfg.feature_sampling_window, context_size=cfg.context_size,
        device=cfg.device, dtype=cfg.dtype, **cfg.extra,
    )  # fmt: skip
    if entry.kind == "transcoder":
        run_cfg: Any = gemma_scope_transcoder_config(cfg.model_name, entry.layer, entry.d_sae, **settings)  # type: ignore[arg-type]
    else:
        run_cfg = gemma_scope_sae_config(cfg.model_name, entry.site, entry.layer, entry.d_sae, **settings)
    from sae_lens.registry import get_sae_training_class

    sae_class, _ = get_sae_training_class(run_cfg.sae.architecture())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(entry.seed)
        sae = sae_class(run_cfg.sae)
    hooks = entry.hooks(cfg.model_name)
    meta = sae.cfg.metadata
    meta.hook_name, meta.model_name, meta.context_size = hooks[0], cfg.model_name, cfg.context_size
    meta.prepend_bos, meta.exclude_special_tokens = True, cfg.exclude_special_tokens
    if len(hooks) == 2:
        meta.hook_name_out = hooks[1]
    return SAETrainer(cfg=run_cfg.to_sae_trainer_config(), sae=sae, data_provider=iter(()))


class SuiteTrainingRunner:
    """Trains every entry of a ``SuiteConfig`` not yet in its manifest; ``run()`` returns the manifest.

    ``source`` overrides where the packed activations come from (any ``ChunkSource`` whose columns
    are ``cfg.hooks()`` in order; one data stream only); by default the cache at ``cfg.cache_path``
    or the model. ``metrics_log`` receives a record every ``log_every`` steps (losses, tokens/s)
    and one per finished entry (L0, FVU, dead fraction); under torchrun, on rank 0 only.
    """

    def __init__(self, cfg: SuiteConfig, model: Any = None, source: ChunkSource | None = None,
                 progress: bool = True, metrics_log: Callable[[dict], None] | None = None,
                 log_every: int = 0) -> None:  # fmt: skip
        self.cfg, self.model, self.progress, self.log_every = cfg, model, progress, log_every
        self.out = check_writable_dir(cfg.output_path, "suite output folder")
        self.manifest = read_manifest(self.out)
        self.todo = [e for e in cfg.entries if e.name not in self.manifest["entries"]]
        self.hooks = cfg.hooks()
        self._source = source
        self.metrics_log = metrics_log or (lambda record: None)
        self._log = self.metrics_log  # and to W&B during a run that asks for it
        self.comm: Comm | None = None
        """The collectives of the last ``run()`` under torchrun (``comm.bytes_sent``), else None."""
        self._columns(self.hooks)

    def _columns(self, hooks: list[str]) -> None:
        widths, start_col = self.cfg.hook_widths(), 0
        self.columns: dict[str, slice] = {}
        for h in hooks:
            self.columns[h] = slice(start_col, start_col + widths[h])
            start_col += widths[h]
        self.width = start_col

    def sources(self, topo: Topology, cfg: SuiteConfig) -> dict[int, ChunkSource]:
        """A source for each of this rank's data streams (built after the checks)."""
        if self._source is not None:
            if topo.data_streams != 1:
                raise ValueError(f"a source passed to SuiteTrainingRunner feeds one data stream; "
                                 f"this run has {topo.data_streams}: leave source out")  # fmt: skip
            return {0: self._source}
        from gemma_scope_ext.training.suite_sources import stream_sources

        return stream_sources(cfg, self.model, self.hooks, topo.streams, topo.data_streams)

    def batch_for(self, entry: SuiteEntry, batch: torch.Tensor) -> torch.Tensor:
        """The entry's columns: its hook, or its input and target hooks side by side."""
        parts = [batch[:, self.columns[h]] for h in entry.hooks(self.cfg.model_name)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def run(self) -> dict[str, Any]:
        """Train the unfinished entries to their budgets, saving each as it finishes."""
        cfg = self.cfg
        joined = dist.is_initialized()
        topo, self.comm = start(cfg.data_streams, cfg.device, cfg.distributed_timeout_s)
        try:
            if self.comm is not None:
                check_same_config(self.comm, {**cfg.to_dict(), "todo": [e.name for e in self.todo]})
                check_shared_folder(self.comm, self.out)
            return self._run(topo, make_parallel(topo, self.comm, cfg))
        finally:
            if self.comm is not None and not joined:
                dist.destroy_process_group()

    def _run(self, topo: Topology, par: Single) -> dict[str, Any]:
        cfg = self.cfg
        self.manifest["suite"] = cfg.to_dict()
        if not self.todo:
            if topo.writer:
                write_manifest(self.out, self.manifest)
            return self.manifest
        run_cfg = replace(cfg, device=topo.device(cfg.device))
        owned = par.owns(self.todo)
        self._columns(par.batch_hooks(self.hooks, owned))
        trainers = {e.name: entry_trainer(run_cfg, e) for e in owned}
        for trainer in trainers.values():
            par.prepare(trainer)
        entries = {e.name: e for e in self.todo}
        batch_size = cfg.train_batch_size_tokens
        finish_at = {e.name: -(-cfg.entry_tokens(e) // batch_size) for e in self.todo}
        total = max(finish_at.values())
        torch.manual_seed(cfg.seed)
        streams = StreamSet(cfg, self.sources(topo, run_cfg), topo.data_streams)
        self._log, finish, log_every = self.metrics_log, None, self.log_every
        if cfg.log_to_wandb and topo.writer:
            from gemma_scope_ext.training.suite_wandb import with_wandb

            self._log, finish = with_wandb(cfg, self.metrics_log)
        if cfg.log_to_wandb:
            log_every = log_every or 10  # SAELens's default wandb_log_frequency
        step = 0
        state = load_checkpoint(self.out, trainers, topo.streams, topo.data_streams, topo.rank)
        if state is not None:
            step, stream_states = state
            streams.load_state_dict(stream_states)
        bar = tqdm(total=total, initial=step, unit="step", disable=not (self.progress and topo.writer),
                   file=sys.stderr, desc=f"suite of {len(self.todo)}")  # fmt: skip
        last: dict[str, Any] = {}
        t0, tokens0 = time.perf_counter(), step * batch_size
        while step < total:
            if self.comm is not None:
                self.comm.where = f"step {step + 1}"
            batch = par.exchange(streams.next_batch())
            records = []
            for name, trainer in list(trainers.items()):
                trainer.maybe_reset_sparsity()
                rows = self.batch_for(entries[name], batch)
                token = par.before_step(trainer, rows)
                last[name] = trainer.step(rows)
                par.after_step(trainer, token, len(rows))
                trainer.n_training_steps += 1
                if step + 1 == finish_at[name]:
                    records.append(self._finish(entries[name], trainer, last.pop(name), par, topo))
                    del trainers[name]
            step += 1
            for record in par.records(records, step in finish_at.values()):
                self.manifest["entries"][record["path"]] = record
                if topo.writer:
                    write_manifest(self.out, self.manifest)
                    self._log({"event": "entry_finished", "entry": record["path"], **record["metrics"]})
            rate = (step * batch_size - tokens0) / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(tokens_per_s=f"{rate:,.0f}")
            bar.update(1)
            if log_every and step % log_every == 0:
                losses = par.losses({n: float(o.loss.detach()) for n, o in last.items()})
                if topo.writer:
                    self._log({"event": "step", "step": step, "tokens_per_s": rate, "loss": losses})
            if cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0 and step < total:
                self._checkpoint(topo, par, step, trainers, streams)
        bar.close()
        if finish is not None:
            finish()
        if self.comm is not None:
            self.comm.barrier()
        if topo.writer:
            shutil.rmtree(self.out / "checkpoints", ignore_errors=True)  # every entry is saved
        return self.manifest

    def _checkpoint(self, topo: Topology, par: Single, step: int, trainers: dict[str, SAETrainer],
                    streams: StreamSet) -> None:  # fmt: skip
        """Every rank writes its part into a folder rank 0 made; rank 0 then makes it the latest."""
        target = self.out / "checkpoints" / f"step-{step}"
        if topo.writer:
            begin_checkpoint(self.out, step)
        if self.comm is not None:
            self.comm.barrier()
        mine = trainers if par.writes_entries(topo) else {}
        write_checkpoint_part(target, mine, streams.state_dict(), topo.rank)
        if self.comm is not None:
            self.comm.barrier()
        if topo.writer:
            running = [e.name for e in self.todo if e.name not in self.manifest["entries"]]
            commit_checkpoint(target, step, running, topo.data_streams)

    @torch.no_grad()
    def _finish(self, entry: SuiteEntry, trainer: SAETrainer, out: Any, par: Single,
                topo: Topology) -> dict[str, Any]:  # fmt: skip
        trainer.set_final_sae_metadata()
        fvu = par.finish_metrics(out.sae_in, out.sae_out)
        if par.writes_entries(topo):
            trainer.sae.save_inference_model(str(self.out / entry.name))
        metrics = {
            "l0": float(trainer.sae.cfg.metadata.l0),
            "fvu": fvu,
            "dead_fraction": float(trainer.dead_neurons.float().mean()),
            "training_tokens": trainer.n_training_samples,
        }
        return {"path": entry.name, "kind": entry.kind, "site": entry.site, "layer": entry.layer,
                "hooks": list(entry.hooks(self.cfg.model_name)),
                "config": json.loads(json.dumps(entry.__dict__)), "metrics": metrics}  # fmt: skip
