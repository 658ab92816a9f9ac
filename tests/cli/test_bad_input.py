"""The command line refuses bad input before loading a model, and keeps finished results."""

from __future__ import annotations

import argparse
import os

import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.sae import SAEMetadata

import gemma_scope_cli
from gemma_scope_ext.cli import eval as eval_cmd


def test_every_flag_has_help_text():
    parser = gemma_scope_cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {a.dest}" for name, p in sub.choices.items() for a in p._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert not missing, f"flags without help: {missing}"


@pytest.mark.parametrize("argv, message", [
    (["demo", "--tokens", "-5"], "expected a number >= 1, got -5"),
    (["demo", "--tokens", "many"], "expected a whole number, got 'many'"),
    (["eval", "--sae", "x", "--n-seqs", "0"], "expected a number >= 1, got 0"),
])
def test_impossible_numbers_are_refused_at_parse_time(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        gemma_scope_cli.main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the model would be loaded: the checks must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr("gemma_scope_ext.models.loading.load_model", refuse)


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=128, d_sae=8, metadata=SAEMetadata(
        hook_name="blocks.1.hook_resid_post")))
    path = tmp_path_factory.mktemp("sae") / "tiny"
    sae.save_model(str(path))
    return path


def _eval(argv, capsys):
    code = gemma_scope_cli.main(["eval", "--quiet", "--n-seqs", "2", "--seq-len", "16", *argv])
    return code, capsys.readouterr()


def test_out_pointing_at_a_file_is_refused_first(tmp_path, sae_dir, no_model, capsys):
    target = tmp_path / "eval.json"
    target.write_text("{}")
    code, out = _eval(["--sae", str(sae_dir), "--out", str(target)], capsys)
    assert code == 2
    assert f"the --out folder {target} is an existing file" in out.err


def test_out_that_cannot_be_created_is_refused_first(tmp_path, sae_dir, no_model, capsys):
    (tmp_path / "file").write_text("")
    code, out = _eval(["--sae", str(sae_dir), "--out", str(tmp_path / "file" / "sub")], capsys)
    assert code == 2
    assert "cannot write to the --out folder" in out.err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_refused_first(tmp_path, sae_dir, no_model, capsys):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    code, out = _eval(["--sae", str(sae_dir), "--out", str(ro)], capsys)
    assert code == 2
    assert "cannot write to the --out folder" in out.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error(tmp_path, sae_dir, no_model, capsys):
    code, out = _eval(["--sae", str(sae_dir), "--device", "cuda", "--out", str(tmp_path)], capsys)
    assert code == 2
    assert "CUDA is not available here" in out.err and "Traceback" not in out.err


def test_a_missing_folder_with_a_colon_is_not_called_a_release(tmp_path, capsys):
    code, out = _eval(["--sae", "./missing_dir:x", "--out", str(tmp_path)], capsys)
    assert code == 2
    assert "no SAE folder at missing_dir:x" in out.err
    assert "unknown release" not in out.err


def test_an_unknown_builtin_split_lists_the_valid_ones(tmp_path, sae_dir, capsys):
    code, out = _eval(["--sae", str(sae_dir), "--dataset", "docstrings:bogus",
                       "--out", str(tmp_path)], capsys)
    assert code == 2
    assert "unknown split 'bogus' of the built-in text; expected one of: train, eval" in out.err


def test_results_are_printed_before_a_write_that_fails(tmp_path, sae_dir, monkeypatch, capsys):
    def fail(path, obj):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(eval_cmd, "write_json", fail)
    code, out = _eval(["--sae", str(sae_dir), "--no-ablations", "--out", str(tmp_path)], capsys)
    assert code == 2
    assert "| docstrings | tiny |" in out.out  # the table made it out
    assert "Permission denied" in out.err and "Traceback" not in out.err


def test_demo_runs_only_on_an_embedded_tiny_model(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr("gemma_scope_ext.models.loading.tiny_model", refuse)
    code = gemma_scope_cli.main(["demo", "--model", "gemma-3-1b-pt", "--out", str(tmp_path / "s")])
    assert code == 2
    assert "expected one of: tiny-gemma2, tiny-gemma3" in capsys.readouterr().err
