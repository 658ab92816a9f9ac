"""``gemma-scope harvest`` and ``gemma-scope train`` on the tiny model, offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from sae_lens import SAE

import gemma_scope_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", ["harvest", "train"])
def test_help_does_not_import_torch(command):
    code = ("import sys, gemma_scope_cli\n"
            f"try:\n    gemma_scope_cli.main([{command!r}, '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "usage: gemma-scope" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "False"
    # Control: the same probe sees torch once a subcommand's code runs.
    probe = "import sys\nimport gemma_scope_ext.cli.suite\nprint('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == "True"


def test_harvest_then_train_a_ladder_from_the_cache(tmp_path, capsys):
    torch.set_num_threads(1)
    cache = tmp_path / "cache"
    code = gemma_scope_cli.main(["harvest", "--site", "res", "--site", "transcoder", "--layer", "1",
                                 "--tokens", "1600", "--context-size", "32", "--rows-per-shard", "4",
                                 "--out", str(cache), "--quiet"])  # fmt: skip
    assert code == 0
    err = capsys.readouterr()
    assert "MiB on disk" in err.err and "activations of 3 hooks" in err.out
    suite = {"model_name": "tiny-gemma2", "training_tokens": 640, "train_batch_size_tokens": 64,
             "cache_path": str(cache), "output_path": str(tmp_path / "out"), "lr": 1e-2, "lr_warm_up_steps": 1,
             "entries": {"sites": ["res", "transcoder"], "layers": [1], "d_sae": 32,
                         "l0_coefficients": [1e-3, 1.0], "l0_warm_up_steps": 2}}  # fmt: skip
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    assert gemma_scope_cli.main(["train", str(path), "--quiet", "--log-every", "5"]) == 0
    out = capsys.readouterr().out
    assert "4 entries in" in out
    lines = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if x["event"] == "step"]
    assert [x["step"] for x in steps] == [5, 10] and all(x["tokens_per_s"] > 0 for x in steps)
    finished = [x for x in lines if x["event"] == "entry_finished"]
    assert len(finished) == 4 and all({"l0", "fvu", "dead_fraction"} <= set(x) for x in finished)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    for name, record in manifest["entries"].items():
        sae = SAE.load_from_disk(str(tmp_path / "out" / record["path"]))
        assert sae.cfg.metadata.hook_name == record["hooks"][0], name
    # The sparser rung is sparser.
    l0 = {r["config"]["l0_coefficient"]: r["metrics"]["l0"] for r in manifest["entries"].values()
          if r["site"] == "res"}  # fmt: skip
    assert l0[1.0] < l0[1e-3]
    # Rerun: nothing is trained again.
    assert gemma_scope_cli.main(["train", str(path), "--quiet"]) == 0
    assert "already trained" in capsys.readouterr().out


def test_bad_suites_are_refused_before_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("gemma_scope_ext.models.loading.load_model",
                        lambda *a, **k: pytest.fail("model loaded"))  # fmt: skip
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"model_name": "tiny-gemma2", "training_tokens": 640,
                                    "entries": [{"kind": "sae", "site": "resid", "layer": 1,
                                                 "d_sae": 8}]}))  # fmt: skip
    assert gemma_scope_cli.main(["train", str(path)]) == 2
    assert "unknown site 'resid'" in capsys.readouterr().err
    assert gemma_scope_cli.main(["train", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert gemma_scope_cli.main(["harvest", "--site", "res", "--layer", "9", "--out",
                                 str(tmp_path / "c")]) == 2  # fmt: skip
    assert "out of range" in capsys.readouterr().err
