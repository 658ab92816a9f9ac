"""Suites on the tiny Gemma 2: the same weights as single runs of SAELens's own trainer.

Reference: each entry trained alone by ``SAETrainer.fit`` (SAELens's loop) on batches built here
with plain ``run_with_cache`` over the whole model (so ``stop_at_layer`` is checked too), special
tokens dropped, in stream order.
"""

from __future__ import annotations

import json

import pytest
import torch
from sae_lens import SAE
from sae_lens.training.sae_trainer import SAETrainer

from gemma_scope_ext.models.text import sample_tokens
from gemma_scope_ext.training.suite_config import SuiteConfig, SuiteEntry, suite_entries
from gemma_scope_ext.training.suite_runner import SuiteTrainingRunner, entry_trainer

SPECIAL = [0, 1, 2]
BATCH = 64


pytestmark = pytest.mark.usefixtures("one_thread")


def suite_cfg(tmp_path, entries, **kw) -> SuiteConfig:
    settings = dict(model_name="tiny-gemma2", entries=entries, training_tokens=12 * BATCH,
                    output_path=str(tmp_path / "suite"), context_size=32, store_batch_size_prompts=4,
                    train_batch_size_tokens=BATCH, n_batches_in_buffer=2, mix_fraction=0.0,
                    lr=3e-3, lr_warm_up_steps=2, dead_feature_window=5, feature_sampling_window=4)  # fmt: skip
    settings.update(kw)
    return SuiteConfig(**settings)


def two_entries() -> list[SuiteEntry]:
    return [SuiteEntry("sae", "res", 0, 48, l0_coefficient=1e-3, seed=3, l0_warm_up_steps=4),
            SuiteEntry("transcoder", "transcoder", 1, 40, l0_coefficient=2e-3, seed=4,
                       l0_warm_up_steps=4)]  # fmt: skip


def reference_batches(model, cfg: SuiteConfig, entry: SuiteEntry) -> list[torch.Tensor]:
    """The entry's batches in stream order, from a full forward with plain hooks."""
    tokens = sample_tokens(model.tokenizer, 400 // 30 + 1 + 24, cfg.context_size, "train")
    hooks = entry.hooks(cfg.model_name)
    rows = []
    for i in range(0, len(tokens) - 3, 4):
        t = tokens[i : i + 4]
        _, cache = model.run_with_cache(t, names_filter=list(hooks))
        keep = ~torch.isin(t, torch.tensor(SPECIAL)).reshape(-1)
        rows.append(torch.cat([cache[h].reshape(t.numel(), -1) for h in hooks], 1)[keep])
    flat = torch.cat(rows)
    n = cfg.entry_tokens(entry) // BATCH
    assert len(flat) >= n * BATCH
    return list(flat[: n * BATCH].split(BATCH))


def train_alone(model, cfg, entry) -> dict[str, torch.Tensor]:
    trainer = entry_trainer(cfg, entry)
    trainer = SAETrainer(cfg=trainer.cfg, sae=trainer.sae,
                         data_provider=iter(reference_batches(model, cfg, entry)))  # fmt: skip
    return {k: v.detach().clone() for k, v in trainer.fit().state_dict().items()}


def trained_weights(folder) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in SAE.load_from_disk(str(folder)).state_dict().items()}


def test_a_suite_trains_what_single_runs_train(kind_model, tmp_path) -> None:
    cfg = suite_cfg(tmp_path, two_entries())
    manifest = SuiteTrainingRunner(cfg, model=kind_model, progress=False).run()
    assert set(manifest["entries"]) == {e.name for e in cfg.entries}
    for entry in cfg.entries:
        alone = entry_trainer(cfg, entry).sae
        alone.load_state_dict(train_alone(kind_model, cfg, entry))
        alone.complete_step()  # as saving does
        got = trained_weights(tmp_path / "suite" / entry.name)
        want = alone.inference_state_dict()
        assert set(got) == set(want)
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)
        record = manifest["entries"][entry.name]
        assert record["metrics"]["training_tokens"] == 12 * BATCH
        assert 0 < record["metrics"]["l0"] < entry.d_sae and 0 < record["metrics"]["fvu"] < 2
        assert 0 <= record["metrics"]["dead_fraction"] <= 1
    on_disk = json.loads((tmp_path / "suite" / "manifest.json").read_text())
    assert on_disk["entries"] == manifest["entries"]
    # Negative controls: another seed, or shuffled data, trains other weights.
    reseeded = SuiteEntry("sae", "res", 0, 48, l0_coefficient=1e-3, seed=5, l0_warm_up_steps=4)
    cfg2 = suite_cfg(tmp_path / "b", [reseeded])
    SuiteTrainingRunner(cfg2, model=kind_model, progress=False).run()
    a = trained_weights(tmp_path / "suite" / cfg.entries[0].name)["W_enc"]
    assert (trained_weights(tmp_path / "b" / "suite" / reseeded.name)["W_enc"] - a).abs().max() > 1e-3
    cfg3 = suite_cfg(tmp_path / "c", [cfg.entries[0]], mix_fraction=0.5)
    SuiteTrainingRunner(cfg3, model=kind_model, progress=False).run()
    assert (trained_weights(tmp_path / "c" / "suite" / cfg.entries[0].name)["W_enc"] - a).abs().max() > 1e-4


def test_a_finished_entry_is_not_trained_again(tiny_model, tmp_path) -> None:
    entries = two_entries()[:1]
    cfg = suite_cfg(tmp_path, entries, training_tokens=4 * BATCH, checkpoint_every_steps=1)
    SuiteTrainingRunner(cfg, model=tiny_model, progress=False).run()
    assert not (tmp_path / "suite" / "checkpoints").exists()  # a finished suite keeps none
    folder = tmp_path / "suite" / entries[0].name
    before = (folder / "sae_weights.safetensors").stat().st_mtime_ns
    more = [*entries, SuiteEntry("sae", "mlp", 1, 32, seed=1)]
    runner = SuiteTrainingRunner(suite_cfg(tmp_path, more, training_tokens=4 * BATCH),
                                 model=tiny_model, progress=False)  # fmt: skip
    assert [e.name for e in runner.todo] == [more[1].name]
    manifest = runner.run()
    assert (folder / "sae_weights.safetensors").stat().st_mtime_ns == before
    assert set(manifest["entries"]) == {e.name for e in more}


def test_suite_entries_builds_a_ladder_and_bad_configs_are_refused(tmp_path) -> None:
    ladder = suite_entries("tiny-gemma2", sites=["res", "mlp", "att", "transcoder"], layers=[1],
                           d_sae=64, l0_coefficients=[1e-4, 5e-4, 1e-3])  # fmt: skip
    assert len(ladder) == 12 and len({e.name for e in ladder}) == 12
    assert sum(e.kind == "transcoder" for e in ladder) == 3
    cfg = suite_cfg(tmp_path, ladder)
    assert cfg.hooks() == ["blocks.1.hook_resid_post", "blocks.1.hook_mlp_out", "blocks.1.attn.hook_z",
                           "blocks.1.ln2.hook_normalized"]  # fmt: skip
    assert cfg.hook_widths()["blocks.1.attn.hook_z"] == 96
    with pytest.raises(ValueError, match="unknown site 'resid'"):
        suite_cfg(tmp_path, [SuiteEntry("sae", "resid", 1, 8)])
    with pytest.raises(ValueError, match="duplicate entry res-L1"):
        suite_cfg(tmp_path, [SuiteEntry("sae", "res", 1, 8), SuiteEntry("sae", "res", 1, 8)])
    with pytest.raises(ValueError, match="a transcoder lives at site 'transcoder'"):
        suite_cfg(tmp_path, [SuiteEntry("transcoder", "mlp", 1, 8)])
    with pytest.raises(ValueError, match="out of range"):
        suite_cfg(tmp_path, [SuiteEntry("sae", "res", 99, 8)])
    with pytest.raises(ValueError, match="unknown suite settings"):
        SuiteConfig.from_dict({**cfg.to_dict(), "lrr": 1})
    assert SuiteConfig.from_dict(cfg.to_dict()) == cfg


class FakeWandbRun:
    """Records what a W&B run is given (no network, no wandb folder)."""

    def __init__(self, **init):
        self.init, self.logged, self.finished = init, [], False

    def log(self, values, step=None):
        self.logged.append((values, step))

    def finish(self):
        self.finished = True


def test_wandb_gets_the_suite_records_one_key_per_entry(tiny_model, tmp_path, monkeypatch) -> None:
    import wandb

    runs: list[FakeWandbRun] = []
    monkeypatch.setattr(wandb, "init", lambda **kw: runs.append(FakeWandbRun(**kw)) or runs[-1])
    entries = two_entries()
    records: list[dict] = []
    cfg = suite_cfg(tmp_path, entries, training_tokens=4 * BATCH, log_to_wandb=True,
                    wandb_project="p", run_name="ladder")  # fmt: skip
    SuiteTrainingRunner(cfg, model=tiny_model, progress=False, metrics_log=records.append,
                        log_every=2).run()  # fmt: skip
    (run,) = runs
    assert run.init["project"] == "p" and run.init["name"] == "ladder" and run.finished
    assert run.init["config"]["entries"][0]["site"] == "res"
    steps = [r for r in records if r["event"] == "step"]
    assert [s for _, s in run.logged if s is not None] == [r["step"] for r in steps] == [2, 4]
    stepped = [values for values, step in run.logged if step is not None]
    for record, values in zip(steps, stepped, strict=True):
        assert values == {**{f"{n}/loss": v for n, v in record["loss"].items()},
                          "suite/tokens_per_s": record["tokens_per_s"]}  # fmt: skip
    finals = {k: v for values, step in run.logged if step is None for k, v in values.items()}
    for record in (r for r in records if r["event"] == "entry_finished"):
        assert finals[f"{record['entry']}/final_l0"] == record["l0"]
        assert finals[f"{record['entry']}/final_fvu"] == record["fvu"]
    assert {f"{e.name}/final_dead_fraction" for e in entries} <= set(finals)
    # Control: without log_to_wandb no run is started, though the records are the same kind.
    SuiteTrainingRunner(suite_cfg(tmp_path / "b", entries, training_tokens=4 * BATCH),
                        model=tiny_model, progress=False, log_every=2).run()  # fmt: skip
    assert len(runs) == 1


def test_wandb_payload_refuses_unknown_records() -> None:
    from gemma_scope_ext.training.suite_wandb import wandb_payload

    assert wandb_payload({"event": "step", "step": 3, "tokens_per_s": 9.0, "loss": {"a": 1.0}}) == (
        {"a/loss": 1.0, "suite/tokens_per_s": 9.0}, 3)  # fmt: skip
    with pytest.raises(ValueError, match="unknown suite record event 'epoch'"):
        wandb_payload({"event": "epoch"})
