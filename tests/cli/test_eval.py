"""``gemma-scope eval`` offline on the tiny model, with PCA SAEs whose FVU is known in closed form."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from sae_lens import SAE
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.sae import SAEMetadata

import gemma_scope_cli
from gemma_scope_ext.evals.metrics import evaluate
from gemma_scope_ext.models.text import sample_tokens

pytestmark = pytest.mark.usefixtures("one_thread")

HOOK = "blocks.1.hook_resid_post"
N_SEQS, SEQ_LEN = 6, 48


def pca_sae(x: torch.Tensor, k: int, hook: str) -> tuple[JumpReLUSAE, float]:
    """Latents +-u_i for the top-k principal directions u_i of ``x`` (threshold 0, b_dec = mean):
    the SAE projects onto them, so its FVU is the share of variance in the other directions."""
    x = x.double()
    mu = x.mean(0)
    evals, evecs = torch.linalg.eigh((x - mu).T @ (x - mu) / len(x))
    top = evecs[:, evals.argsort(descending=True)[:k]]
    fvu = 1 - evals.sort(descending=True).values[:k].sum() / evals.sum()
    d = x.shape[-1]
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=2 * k, metadata=SAEMetadata(hook_name=hook)))
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([top, -top], dim=1))
        sae.W_dec.copy_(sae.W_enc.T)
        sae.b_dec.copy_(mu)
        sae.b_enc.zero_()
        sae.threshold.zero_()
    return sae, float(fvu)


@pytest.fixture(scope="module")
def saved(tiny_model, tmp_path_factory):
    tokens = sample_tokens(tiny_model.tokenizer, N_SEQS, SEQ_LEN, "eval")
    _, cache = tiny_model.run_with_cache(tokens, names_filter=[HOOK])
    x = cache[HOOK][~torch.isin(tokens, torch.tensor([0, 1, 2]))]
    root = tmp_path_factory.mktemp("saes")
    out = {}
    for k in (4, 32):
        sae, fvu = pca_sae(x, k, HOOK)
        sae.save_model(str(root / f"pca{k}"))
        out[f"pca{k}"] = (root / f"pca{k}", fvu)
    return tokens, out


def test_eval_command_writes_json_and_plots(tiny_model, saved, tmp_path, capsys):
    tokens, saes = saved
    out = tmp_path / "report"
    argv = ["eval", "--sae", str(saes["pca4"][0]), "--sae", str(saes["pca32"][0]),
            "--dataset", "docstrings", "--dataset", "docstrings:train",
            "--n-seqs", str(N_SEQS), "--seq-len", str(SEQ_LEN), "--batch-size", "4",
            "--out", str(out), "--quiet"]
    assert gemma_scope_cli.main(argv) == 0
    data = json.loads((out / "eval.json").read_text())
    assert data["model"] == "tiny-gemma2" and data["seq_len"] == SEQ_LEN
    assert list(data["results"]) == ["docstrings", "docstrings:train"]
    held_out = data["results"]["docstrings"]
    for name, (path, fvu) in saes.items():
        got = held_out["results"][name]
        k = int(name.removeprefix("pca"))
        assert got["fvu"] == pytest.approx(fvu, rel=1e-4, abs=1e-6)  # closed form
        assert got["l0"] == pytest.approx(k)  # exactly one of relu(z), relu(-z) is active
        direct = evaluate(tiny_model, SAE.load_from_disk(str(path)), tokens, progress=False)
        assert got["delta_loss"] == pytest.approx(direct.delta_loss, abs=1e-6)
        assert got["zero_ablation_loss"] == pytest.approx(direct.zero_ablation_loss, abs=1e-6)
        assert got["hook_name"] == HOOK and got["d_sae"] == 2 * k
    assert held_out["results"]["pca32"]["fvu"] < held_out["results"]["pca4"]["fvu"]
    assert held_out["frontier"][0] == "pca4"
    # the train split is other text: PCA fitted on held-out tokens explains it less well
    assert data["results"]["docstrings:train"]["results"]["pca4"]["fvu"] != pytest.approx(
        saes["pca4"][1], rel=1e-4)
    for png in ("l0_vs_delta_loss.png", "by_position.png", "by_dataset.png"):
        raw = (out / png).read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        import matplotlib.image

        h, w, _ = matplotlib.image.imread(str(out / png)).shape
        assert h > 200 and w > 300
    table = capsys.readouterr().out
    assert "| docstrings | pca4 | 4.0 |" in table
    assert sorted(p.name for p in out.iterdir()) == [
        "by_dataset.png", "by_position.png", "eval.json", "l0_vs_delta_loss.png"]


def test_bridge_flag_gives_the_same_report(saved, tmp_path, monkeypatch):
    from gemma_scope_ext.models import loading

    booted = []  # the flag must really boot a TransformerBridge
    real = loading.bridge_from_hf
    monkeypatch.setattr(loading, "bridge_from_hf", lambda *a, **k: booted.append(1) or real(*a, **k))
    _, saes = saved
    reports = {}
    for flag in ([], ["--bridge"]):
        out = tmp_path / ("bridge" if flag else "hooked")
        argv = ["eval", "--sae", str(saes["pca4"][0]), "--n-seqs", str(N_SEQS), "--seq-len",
                str(SEQ_LEN), "--batch-size", "4", "--out", str(out), "--quiet", *flag]
        assert gemma_scope_cli.main(argv) == 0
        reports[bool(flag)] = json.loads((out / "eval.json").read_text())["results"]["docstrings"]
        assert len(booted) == len(flag)
    ours, ref = reports[True]["results"]["pca4"], reports[False]["results"]["pca4"]
    assert ref["delta_loss"] > 1e-3
    for key in ("clean_loss", "delta_loss", "zero_ablation_loss", "fvu", "l0"):
        assert ours[key] == pytest.approx(ref[key], rel=1e-4, abs=2e-5), key


def test_bad_sae_argument_is_a_clear_error(tmp_path, capsys):
    code = gemma_scope_cli.main(["eval", "--sae", str(tmp_path / "missing"), "--out",
                                 str(tmp_path / "o"), "--quiet"])
    assert code == 2
    assert "neither a folder nor RELEASE:SAE_ID" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_help_does_not_import_torch():
    code = ("import sys, gemma_scope_cli; "
            "a = gemma_scope_cli.build_parser().parse_args(['eval', '--sae', 'x']); "
            "assert a.handler == 'gemma_scope_ext.cli.eval:main', a; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
