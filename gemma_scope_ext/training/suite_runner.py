"""Training a suite: every entry fed from one stream of packed activations, one LM pass per batch.

Each entry is the recipe's training class driven by its own SAELens ``SAETrainer`` (its own Adam,
learning-rate and lambda schedules, input/target scalars and dead-latent counters), stepped as
``SAETrainer.fit`` steps it; the runner only routes each batch's columns to the entries that read
them (a transcoder gets its input and target hooks side by side, as ``TranscoderActivationsStore``
serves them). The activations come from the model (``LiveSource``: one forward per batch of rows,
stopped after the deepest block any entry reads) or from a cache (``CacheSource``), through a
``MixingBuffer`` whose state checkpoints hold.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from sae_lens.training.sae_trainer import SAETrainer
from tqdm.auto import tqdm

from gemma_scope_ext.activations.buffer import ChunkSource, MixingBuffer
from gemma_scope_ext.files import check_writable_dir
from gemma_scope_ext.training.runner_config import (
    gemma_scope_sae_config,
    gemma_scope_transcoder_config,
)
from gemma_scope_ext.training.suite_config import SuiteConfig, SuiteEntry
from gemma_scope_ext.training.suite_state import (
    load_checkpoint,
    read_manifest,
    save_checkpoint,
    write_manifest,
)

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
    are ``cfg.hooks()`` in order); by default the cache at ``cfg.cache_path`` or the model.
    ``metrics_log`` receives a record every ``log_every`` steps (losses, tokens/s) and one per
    finished entry (L0, FVU, dead fraction).
    """

    def __init__(self, cfg: SuiteConfig, model: Any = None, source: ChunkSource | None = None,
                 progress: bool = True, metrics_log: Callable[[dict], None] | None = None,
                 log_every: int = 0) -> None:  # fmt: skip
        self.cfg, self.model, self.progress, self.log_every = cfg, model, progress, log_every
        self.out = check_writable_dir(cfg.output_path, "suite output folder")
        self.manifest = read_manifest(self.out)
        self.todo = [e for e in cfg.entries if e.name not in self.manifest["entries"]]
        self.hooks = cfg.hooks()
        widths = cfg.hook_widths()
        self.columns: dict[str, slice] = {}
        start = 0
        for h in self.hooks:
            self.columns[h] = slice(start, start + widths[h])
            start += widths[h]
        self.width = start
        self._source = source
        self.metrics_log = metrics_log or (lambda record: None)
        self._log = self.metrics_log  # and to W&B during a run that asks for it

    def source(self) -> ChunkSource:
        """Where the activations come from (built on first use, after the checks)."""
        if self._source is None:
            from gemma_scope_ext.training.suite_sources import default_source

            self._source = default_source(self.cfg, self.model, self.hooks)
        return self._source

    def batch_for(self, entry: SuiteEntry, batch: torch.Tensor) -> torch.Tensor:
        """The entry's columns: its hook, or its input and target hooks side by side."""
        parts = [batch[:, self.columns[h]] for h in entry.hooks(self.cfg.model_name)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def run(self) -> dict[str, Any]:
        """Train the unfinished entries to their budgets, saving each as it finishes."""
        cfg = self.cfg
        self.manifest["suite"] = cfg.to_dict()
        if not self.todo:
            write_manifest(self.out, self.manifest)
            return self.manifest
        trainers = {e.name: entry_trainer(cfg, e) for e in self.todo}
        entries = {e.name: e for e in self.todo}
        torch.manual_seed(cfg.seed)
        buffer = MixingBuffer(self.source(), cfg.n_batches_in_buffer * cfg.train_batch_size_tokens,
                              cfg.train_batch_size_tokens, cfg.mix_fraction, cfg.seed)  # fmt: skip
        self._log, finish, log_every = self.metrics_log, None, self.log_every
        if cfg.log_to_wandb:
            from gemma_scope_ext.training.suite_wandb import with_wandb

            self._log, finish = with_wandb(cfg, self.metrics_log)
            log_every = log_every or 10  # SAELens's default wandb_log_frequency
        step = 0
        state = load_checkpoint(self.out, trainers)
        if state is not None:
            buffer.load_state_dict(state["buffer"])
            step = int(state["step"])
        total = max(cfg.entry_tokens(e) for e in self.todo) // cfg.train_batch_size_tokens
        bar = tqdm(total=total, initial=step, unit="step", disable=not self.progress,
                   file=sys.stderr, desc=f"suite of {len(trainers)}")  # fmt: skip
        last: dict[str, Any] = {}
        t0, tokens0 = time.perf_counter(), step * cfg.train_batch_size_tokens
        while trainers:
            batch = buffer.next_batch()
            for name, trainer in list(trainers.items()):
                trainer.maybe_reset_sparsity()
                last[name] = trainer.step(self.batch_for(entries[name], batch))
                trainer.n_training_steps += 1
                if trainer.n_training_samples >= trainer.cfg.total_training_samples:
                    self._finish(entries[name], trainer, last.pop(name))
                    del trainers[name]
            step += 1
            rate = (step * cfg.train_batch_size_tokens - tokens0) / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(tokens_per_s=f"{rate:,.0f}")
            bar.update(1)
            if log_every and step % log_every == 0:
                self._log({"event": "step", "step": step, "tokens_per_s": rate,
                                  "loss": {n: float(o.loss.detach()) for n, o in last.items()}})  # fmt: skip
            if cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0 and trainers:
                save_checkpoint(self.out, step, trainers, {"buffer": buffer.state_dict()})
        bar.close()
        if finish is not None:
            finish()
        shutil.rmtree(self.out / "checkpoints", ignore_errors=True)  # every entry is saved
        return self.manifest

    @torch.no_grad()
    def _finish(self, entry: SuiteEntry, trainer: SAETrainer, out: Any) -> None:
        trainer.set_final_sae_metadata()
        folder = self.out / entry.name
        trainer.sae.save_inference_model(str(folder))
        target, recon = out.sae_in.double(), out.sae_out.double()
        metrics = {
            "l0": float(trainer.sae.cfg.metadata.l0),
            "fvu": float((recon - target).pow(2).sum() / (target - target.mean(0)).pow(2).sum()),
            "dead_fraction": float(trainer.dead_neurons.float().mean()),
            "training_tokens": trainer.n_training_samples,
        }
        record = {"path": entry.name, "kind": entry.kind, "site": entry.site, "layer": entry.layer,
                  "hooks": list(entry.hooks(self.cfg.model_name)),
                  "config": json.loads(json.dumps(entry.__dict__)), "metrics": metrics}  # fmt: skip
        self.manifest["entries"][entry.name] = record
        write_manifest(self.out, self.manifest)
        self._log({"event": "entry_finished", "entry": entry.name, **metrics})
