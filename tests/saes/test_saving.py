"""Saving SAEs: an existing saved SAE is never replaced unless asked, and killed saves leave nothing
that stays.

References: the bytes on disk before and after; SAELens's own loader reading what was written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from sae_lens import SAE

from gemma_scope_ext.saes import GemmaScopeSAE, GemmaScopeTranscoder
from gemma_scope_ext.saes.saving import save_sae_files
from gemma_scope_ext.training import GemmaScopeTrainingSAE, GemmaScopeTrainingSAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _params(d_in=8, d_sae=16, d_out=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"W_enc": torch.randn(d_in, d_sae, generator=g), "W_dec": torch.randn(d_sae, d_out, generator=g),
            "b_enc": torch.zeros(d_sae), "b_dec": torch.zeros(d_out), "threshold": torch.rand(d_sae, generator=g)}  # fmt: skip


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("make", [
    lambda seed: GemmaScopeSAE.from_params(_params(seed=seed), hook_name="blocks.0.hook_resid_post"),
    lambda seed: GemmaScopeTranscoder.from_params(_params(d_out=6, seed=seed), hook_name="a",
                                                  hook_name_out="b"),
])  # fmt: skip
def test_save_model_refuses_an_existing_sae_unless_asked(tmp_path, make):
    first, second = make(0), make(1)
    first.save_model(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(FileExistsError, match=f"{tmp_path} already holds a saved SAE; .*overwrite=True"):
        second.save_model(tmp_path)
    assert _snapshot(tmp_path) == before
    second.save_model(tmp_path, overwrite=True)
    assert _snapshot(tmp_path) != before
    torch.testing.assert_close(SAE.load_from_disk(tmp_path).W_enc, second.W_enc)


def _training_sae(seed):
    torch.manual_seed(seed)
    return GemmaScopeTrainingSAE(GemmaScopeTrainingSAEConfig(d_in=8, d_sae=16))


def test_training_saves_refuse_too_and_the_final_save_goes_beside(tmp_path):
    _training_sae(0).save_inference_model(tmp_path / "sae")
    before = _snapshot(tmp_path / "sae")
    with pytest.raises(FileExistsError, match="already holds a saved SAE"):
        _training_sae(1).save_model(tmp_path / "sae")
    new = _training_sae(2)
    with pytest.raises(FileExistsError, match=f"which was kept; this one was saved to {tmp_path / 'sae'}-1"):
        new.save_inference_model(tmp_path / "sae")
    assert _snapshot(tmp_path / "sae") == before  # the old SAE is untouched...
    saved = SAE.load_from_disk(tmp_path / "sae-1")  # ...and the new one is not lost
    torch.testing.assert_close(saved.W_enc, new.inference_state_dict()["W_enc"])
    new.save_inference_model(tmp_path / "sae", overwrite=True)
    assert _snapshot(tmp_path / "sae") != before
    flagged = GemmaScopeTrainingSAE(GemmaScopeTrainingSAEConfig(d_in=8, d_sae=16, overwrite_saved=True))
    flagged.save_inference_model(tmp_path / "sae")  # the config's flag, as the runner sets it


def test_a_file_is_not_a_save_folder(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="it is a file; expected a folder"):
        save_sae_files(tmp_path / "f", {"W": torch.ones(1)}, {})


_KILLED_SAVE = """
import os, signal, sys, torch, safetensors.torch
from gemma_scope_ext.saes.saving import save_sae_files
def killed(tensors, tmp, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
safetensors.torch.save_file = killed
save_sae_files(sys.argv[1], {"W": torch.ones(2)}, {"d_in": 2}, overwrite=True)
"""


def test_a_killed_save_keeps_the_old_sae_and_its_temporary_is_removed_later(tmp_path):
    folder = tmp_path / "sae"
    save_sae_files(folder, {"W": torch.zeros(2)}, {"d_in": 1})
    before = _snapshot(folder)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_KILLED_SAVE), str(folder)],
                          capture_output=True)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    left = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].stat().st_size == 0  # what a kill leaves
    assert {k: v for k, v in _snapshot(folder).items() if not k.endswith(".tmp")} == before
    # The next save keeps a temporary young enough to belong to a live writer, and removes one
    # untouched for over an hour.
    save_sae_files(folder, {"W": torch.ones(2)}, {"d_in": 2}, overwrite=True)
    assert left[0].exists()
    hour_ago = time.time() - 3700
    os.utime(left[0], (hour_ago, hour_ago))
    save_sae_files(folder, {"W": torch.ones(2)}, {"d_in": 2}, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
