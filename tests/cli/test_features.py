"""``gemma-scope features`` offline on the tiny model: a saved SAE in, a site and its data out."""

from __future__ import annotations

import json

import pytest

import gemma_scope_cli
from gemma_scope_ext.features import load_features
from gemma_scope_ext.models.text import sample_tokens
from tests.helpers.random_saes import random_jumprelu

pytestmark = pytest.mark.usefixtures("one_thread")
HOOK = "blocks.2.hook_resid_post"


@pytest.fixture(scope="module")
def sae_folder(tiny_model, tmp_path_factory):
    _, cache = tiny_model.run_with_cache(sample_tokens(tiny_model.tokenizer, 2, 32), names_filter=[HOOK])
    folder = tmp_path_factory.mktemp("saes") / "res2"
    random_jumprelu(cache, HOOK, d_sae=48, seed=5).save_model(str(folder))
    return folder


def test_features_command_writes_a_site_and_its_data(tiny_model, sae_folder, tmp_path, capsys):
    out = tmp_path / "site"
    rc = gemma_scope_cli.main(["features", "--sae", str(sae_folder), "--tokens", "600",
                               "--seq-len", "64", "--out", str(out), "--top-k", "5", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert (out / "index.html").as_uri() in printed  # the path to open
    data = load_features(out / "res2")
    assert data.info.hook_name == HOOK and data.config.top_k == 5
    rows = sample_tokens(tiny_model.tokenizer, 10, 64)  # ceil(600 / 64) rows of the built-in text
    assert data.n_tokens == int((rows > 2).sum())  # BOS, EOS and pad (ids 0-2) never count
    assert {p.name for p in (out / "res2").iterdir()} >= {"index.html", "latent.html", "data",
                                                         "features.json", "features.safetensors"}
    summary = (out / "res2" / "data" / "index.js").read_text()
    assert json.loads(summary.removeprefix("GS.data(").removesuffix(");\n"))["sae"]["d_sae"] == 48


def test_render_only_needs_no_model(sae_folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "site"
    assert gemma_scope_cli.main(["features", "--sae", str(sae_folder), "--tokens", "64",
                                 "--seq-len", "32", "--out", str(out), "--quiet"]) == 0
    (out / "res2" / "latent.html").unlink()

    def no_model(*args, **kwargs):
        raise AssertionError("--render-only loaded a model")

    monkeypatch.setattr("gemma_scope_ext.models.loading.load_model", no_model)
    assert gemma_scope_cli.main(["features", "--render-only", "--out", str(out)]) == 0
    assert (out / "res2" / "latent.html").is_file()
    assert "redrew" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--tokens", "--top-k", "--seq-len", "--quantiles"])
def test_counts_below_one_are_refused_when_parsed(sae_folder, tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as stop:
        gemma_scope_cli.main(["features", "--sae", str(sae_folder), flag, "0",
                              "--out", str(tmp_path / "x")])
    assert stop.value.code == 2
    assert f"{flag}: expected a number >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("argv, message", [
    (["--sae", "no/such/folder"], "neither a folder nor RELEASE:SAE_ID"),
    ([], "at least one --sae"),
])  # fmt: skip
def test_bad_arguments_are_refused_with_a_reason(sae_folder, tmp_path, capsys, argv, message,
                                                 monkeypatch):  # fmt: skip
    if "--sae" not in argv and argv:
        argv = ["--sae", str(sae_folder), *argv]
    if "no/such/folder" not in argv and argv:  # refused before the model loads
        monkeypatch.setattr("gemma_scope_ext.models.loading.load_model",
                            lambda *a, **k: pytest.fail("loaded the model before checking"))
    rc = gemma_scope_cli.main(["features", *argv, "--out", str(tmp_path / "x"), "--quiet"])
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_render_only_on_an_empty_folder_says_what_to_do(tmp_path, capsys):
    assert gemma_scope_cli.main(["features", "--render-only", "--out", str(tmp_path)]) == 2
    assert "write a dashboard there first" in capsys.readouterr().err
