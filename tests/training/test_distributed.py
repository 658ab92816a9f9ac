"""Suites on two gloo ranks end with the weights, scales and counters of one process.

Reference: the same suite in one process with the same ``data_streams`` (so the same global batch
of every step), itself checked against SAELens's own trainer in ``test_suite.py``. Each 2-rank job
is two fresh processes (``tests/helpers/ranks.py``), as torchrun would start them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from gemma_scope_ext.training.distributed import RankLostError, Topology, assign_entries
from gemma_scope_ext.training.suite_config import SuiteConfig, SuiteEntry
from gemma_scope_ext.training.suite_runner import SuiteTrainingRunner
from tests.helpers.ranks import ROOT, launch
from tests.training.test_suite import BATCH, suite_cfg, trained_weights

pytestmark = pytest.mark.usefixtures("one_thread")

CHILD = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from gemma_scope_ext.activations.buffer import MixingBuffer
    from gemma_scope_ext.models.loading import tiny_gemma2
    from gemma_scope_ext.training.suite_config import SuiteConfig
    from gemma_scope_ext.training.suite_runner import SuiteTrainingRunner
    rank = int(os.environ["RANK"])
    cfg_path, kill_rank, kill_at = sys.argv[1].format(rank=rank), int(sys.argv[2]), int(sys.argv[3])
    if rank == kill_rank:
        real, calls = MixingBuffer.next_batch, [0]
        def dying(self):
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self)
        MixingBuffer.next_batch = dying
    cfg = SuiteConfig.from_dict(json.load(open(cfg_path)))
    runner = SuiteTrainingRunner(cfg, model=tiny_gemma2(), progress=False)
    runner.run()
    print(json.dumps({"bytes_sent": runner.comm.bytes_sent}))
""")


def entries() -> list[SuiteEntry]:
    return [SuiteEntry("sae", "res", 0, 32, l0_coefficient=1e-3, seed=1, l0_warm_up_steps=4,
                       training_tokens=6 * BATCH),
            SuiteEntry("sae", "res", 0, 24, l0_coefficient=3e-3, seed=5, l0_warm_up_steps=4),
            SuiteEntry("transcoder", "transcoder", 1, 24, l0_coefficient=2e-3, seed=2,
                       l0_warm_up_steps=4)]  # fmt: skip


def config(tmp_path: Path, name: str, **kw) -> SuiteConfig:
    settings = dict(mix_fraction=0.5, data_streams=2, distributed_timeout_s=120.0,
                    output_path=str(tmp_path / name))  # fmt: skip
    settings.update(kw)
    return suite_cfg(tmp_path, entries(), **settings)


def run_ranks(tmp_path: Path, cfg: SuiteConfig | list[SuiteConfig], kill_rank: int = -1,
              kill_at: int = 0, n_ranks: int = 2):  # fmt: skip
    cfgs = cfg if isinstance(cfg, list) else [cfg] * n_ranks
    for r, c in enumerate(cfgs):
        (tmp_path / f"cfg-{r}.json").write_text(json.dumps(c.to_dict()))
    (tmp_path / "child.py").write_text(CHILD)
    argv = [str(tmp_path / "child.py"), str(tmp_path / "cfg-{rank}.json"), str(kill_rank), str(kill_at)]
    return launch(argv, n_ranks)


def assert_same_weights(a: Path, b: Path, atol: float = 2e-5) -> None:
    for e in entries():
        wa, wb = trained_weights(a / e.name), trained_weights(b / e.name)
        assert set(wa) == set(wb)
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=atol, msg=f"{e.name} {k}")


def assert_same_metrics(a: Path, b: Path) -> None:
    ma = json.loads((a / "manifest.json").read_text())["entries"]
    mb = json.loads((b / "manifest.json").read_text())["entries"]
    assert set(ma) == set(mb) == {e.name for e in entries()}
    for name in ma:
        for key in ("l0", "fvu", "dead_fraction", "training_tokens"):
            assert ma[name]["metrics"][key] == pytest.approx(mb[name]["metrics"][key], rel=1e-4, abs=1e-6)


@pytest.fixture(scope="module")
def one_process(tiny_model, tmp_path_factory) -> Path:
    """The suite trained in one process with two data streams."""
    tmp = tmp_path_factory.mktemp("one")
    SuiteTrainingRunner(config(tmp, "suite"), model=tiny_model, progress=False).run()
    return tmp / "suite"


def test_data_parallel_on_two_ranks_equals_one_process(one_process, tiny_model, tmp_path) -> None:
    ranks = run_ranks(tmp_path, config(tmp_path, "dp"))
    assert [r.returncode for r in ranks] == [0, 0], ranks[0].stderr[-3000:] + ranks[1].stderr[-3000:]
    assert_same_weights(tmp_path / "dp", one_process)
    assert_same_metrics(tmp_path / "dp", one_process)
    # Control: one stream (another global batch each step) trains other weights.
    other = config(tmp_path, "one-stream", data_streams=1)
    SuiteTrainingRunner(other, model=tiny_model, progress=False).run()
    with pytest.raises(AssertionError):
        assert_same_weights(tmp_path / "one-stream", one_process)
    sent = [json.loads(r.stdout.strip().splitlines()[-1])["bytes_sent"] for r in ranks]
    assert sent[0] == sent[1] > 0


def torchrun(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", *argv], cwd=ROOT, text=True,
                          capture_output=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip


def test_distributed_entries_under_torchrun_resume_to_one_process(one_process, tmp_path) -> None:
    """Killed under torchrun, then ``torchrun ... -m gemma_scope_cli train SUITE.yaml`` (as the
    README launches it) resumes and ends where one process ends."""
    cfg = config(tmp_path, "entries", distributed="entries", checkpoint_every_steps=4)
    for r in range(2):
        (tmp_path / f"cfg-{r}.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "child.py").write_text(CHILD)
    # Rank 1 dies fetching step 10's batch; torchrun takes rank 0 down with it.
    cut = torchrun(tmp_path, str(tmp_path / "child.py"), str(tmp_path / "cfg-{rank}.json"), "1", "10")
    assert cut.returncode != 0
    out = Path(cfg.output_path)
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 8 and len(latest["entries"]) == 2
    step8 = out / "checkpoints" / "step-8"
    assert all((step8 / name / "weights.pt").is_file() for name in latest["entries"])  # both owners wrote
    assert sorted(p.name for p in step8.glob("stream-*.pt")) == ["stream-0.pt", "stream-1.pt"]
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    done = torchrun(tmp_path, "-m", "gemma_scope_cli", "train", str(tmp_path / "suite.yaml"), "--quiet")
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("3 entries in") == 1  # rank 0 speaks for the job
    assert_same_weights(out, one_process, atol=1e-6)
    assert_same_metrics(out, one_process)
    assert not (out / "checkpoints").exists()
    records = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert sorted(r["entry"] for r in records) == sorted(e.name for e in entries()[1:])  # resumed two


def test_a_killed_rank_stops_the_job_and_it_resumes(one_process, tiny_model, tmp_path) -> None:
    cfg = config(tmp_path, "cut", checkpoint_every_steps=4)
    # Rank 1 dies fetching step 10's batch: the first SAE finished at step 6, checkpoints at 4, 8.
    first = run_ranks(tmp_path, cfg, kill_rank=1, kill_at=10)
    assert first[1].returncode == -9
    assert first[0].returncode != 0
    assert "RankLostError" in first[0].stderr and "rerun the same command" in first[0].stderr
    out = Path(cfg.output_path)
    assert list(json.loads((out / "manifest.json").read_text())["entries"]) == [entries()[0].name]
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 8 and latest["data_streams"] == 2
    # The checkpoint holds what one process holds at step 8: scales, counters, weights.
    single = config(tmp_path, "single-cut", checkpoint_every_steps=4)
    real = SuiteTrainingRunner._checkpoint

    def stop_after_step_8(self, topo, par, step, trainers, streams):
        real(self, topo, par, step, trainers, streams)
        if step == 8:
            raise KeyboardInterrupt

    SuiteTrainingRunner._checkpoint = stop_after_step_8  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            SuiteTrainingRunner(single, model=tiny_model, progress=False).run()
    finally:
        SuiteTrainingRunner._checkpoint = real  # type: ignore[method-assign]
    for name in latest["entries"]:
        a = out / "checkpoints" / "step-8" / name
        b = Path(single.output_path) / "checkpoints" / "step-8" / name
        wa, wb = (torch.load(p / "weights.pt") for p in (a, b))
        assert set(wa) == set(wb) and {"input_scale", "target_scale", "scales_fixed"} <= set(wa)
        assert bool(wa["scales_fixed"]) and wa["input_scale"] != 1
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=2e-5)
        sa, sb = (torch.load(p / "trainer_state.pt", weights_only=False) for p in (a, b))
        for key in ("n_forward_passes_since_fired", "act_freq_scores"):
            torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0)
        assert sa["n_training_samples"] == sb["n_training_samples"] == 8 * BATCH
    shutil.copytree(out, tmp_path / "elastic")
    shutil.copytree(out, tmp_path / "cut-copy")
    again = run_ranks(tmp_path, cfg)  # the same command resumes from step 8
    assert [r.returncode for r in again] == [0, 0], again[0].stderr[-3000:]
    assert_same_weights(out, one_process)
    # The checkpoint of two ranks resumes in one process with the same data streams, too.
    elastic = config(tmp_path, "elastic", checkpoint_every_steps=4)
    SuiteTrainingRunner(elastic, model=tiny_model, progress=False).run()
    assert_same_weights(tmp_path / "elastic", one_process)
    # Control: resuming with another number of data streams is refused, by name.
    with pytest.raises(ValueError, match="written with 2 data streams, this run has 1"):
        SuiteTrainingRunner(config(tmp_path, "cut-copy", data_streams=1), model=tiny_model,
                            progress=False).run()


def test_ranks_given_different_suites_refuse_to_start(tmp_path) -> None:
    a = config(tmp_path, "mismatch")
    b = config(tmp_path, "mismatch", lr=1e-3)
    ranks = run_ranks(tmp_path, [a, b])
    assert all(r.returncode != 0 for r in ranks)
    assert all("rank 1 differs from rank 0 in lr" in r.stderr for r in ranks)
    assert not (tmp_path / "mismatch" / "manifest.json").exists()


def test_entries_are_shared_by_cost_keeping_hooks_together() -> None:
    # Hand-worked: groups a (5+1), b (4), c (3): a to rank 0, b to rank 1, c to rank 1.
    assert assign_entries([5, 4, 3, 1], ["a", "b", "c", "a"], 2) == [0, 1, 1, 0]
    # Fewer groups than ranks: entries one by one, largest first.
    assert assign_entries([5, 4, 3], ["a", "a", "a"], 2) == [0, 1, 1]
    assert Topology(1, 2, 1, 4).streams == range(2, 4)
    assert Topology(0, 1, 0, 1).device("cuda") == "cuda:0"


def test_bad_distributed_settings_are_refused_up_front(tmp_path) -> None:
    with pytest.raises(ValueError, match="data_streams=3 must be >= 1 and divide"):
        config(tmp_path, "x", data_streams=3)
    with pytest.raises(ValueError, match="distributed must be"):
        config(tmp_path, "x", distributed="model_parallel")
    assert issubclass(RankLostError, RuntimeError)
    assert ROOT.is_dir()
