"""Breakdowns: position buckets by hand, datasets, transfer and SAE sweeps against plain ``evaluate``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.sae import SAEMetadata

from gemma_scope_ext.evals.breakdowns import (
    compare_saes,
    default_position_edges,
    evaluate_datasets,
    evaluate_transfer,
    pareto_frontier,
    position_buckets,
    write_json,
)
from gemma_scope_ext.evals.metrics import evaluate
from gemma_scope_ext.evals.stats import PositionProfile
from gemma_scope_ext.models.text import sample_tokens

pytestmark = pytest.mark.usefixtures("one_thread")

HOOK = "blocks.2.hook_resid_post"
NAN = float("nan")


def sae_with_l0(model, tokens, frac_active: float, seed: int = 0, hook: str = HOOK) -> JumpReLUSAE:
    """Random encoder, decoder = least-squares fit on ``tokens``; each latent fires on about
    ``frac_active`` of tokens, so more active latents reconstruct better."""
    g = torch.Generator().manual_seed(seed)
    _, cache = model.run_with_cache(tokens, names_filter=[hook])
    x = cache[hook].flatten(0, 1)
    d, d_sae = x.shape[-1], 256
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=d_sae, metadata=SAEMetadata(hook_name=hook),
                                        apply_b_dec_to_input=False))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d, d_sae, generator=g) / x.norm(dim=-1).mean())
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.threshold.copy_((x @ sae.W_enc).quantile(1 - frac_active, dim=0).clamp(min=1e-4))
        f = sae.encode(x)
        sae.W_dec.copy_(torch.linalg.lstsq(f, x).solution)
    return sae


def test_position_buckets_by_hand():
    prof = PositionProfile(
        n_tokens=torch.tensor([0, 2, 1, 3, 1]),
        fvu=torch.tensor([NAN, 0.5, 0.2, 0.1, 0.4], dtype=torch.float64),
        l0=torch.tensor([NAN, 10.0, 4.0, 6.0, 2.0], dtype=torch.float64),
        n_loss_tokens=torch.tensor([0, 2, 1, 3, 0]),
        clean_loss=torch.tensor([NAN, 3.0, 2.0, 1.0, NAN], dtype=torch.float64),
        delta_loss=torch.tensor([NAN, 0.3, 0.6, 0.1, NAN], dtype=torch.float64),
    )
    b = position_buckets(prof, [0, 1, 3, 5])
    assert b.start.tolist() == [0, 1, 3] and b.end.tolist() == [1, 3, 5]
    assert b.n_tokens.tolist() == [0, 3, 4] and b.n_loss_tokens.tolist() == [0, 3, 3]
    assert math.isnan(b.fvu[0]) and math.isnan(b.delta_loss[0])
    assert b.fvu[1:].tolist() == pytest.approx([(2 * 0.5 + 0.2) / 3, (3 * 0.1 + 0.4) / 4])
    assert b.l0[1:].tolist() == pytest.approx([(20 + 4) / 3, (18 + 2) / 4])
    assert b.delta_loss[1:].tolist() == pytest.approx([(0.6 + 0.6) / 3, 0.1])
    assert b.clean_loss[1:].tolist() == pytest.approx([(6 + 2) / 3, 1.0])
    # edges past the end are clipped to the profile
    assert position_buckets(prof, [0, 2, 64]).end.tolist() == [2, 5]
    with pytest.raises(ValueError, match="increase"):
        position_buckets(prof, [0, 3, 3])


def test_default_edges():
    assert default_position_edges(4) == [0, 1, 2, 3, 4]
    assert default_position_edges(100) == [0, 1, 2, 4, 8, 16, 32, 64, 100]


def test_buckets_of_a_real_run_pool_back_to_the_total(kind_model):
    tokens = sample_tokens(kind_model.tokenizer, 4, 96)
    res = evaluate(kind_model, sae_with_l0(kind_model, tokens, 0.1), tokens, progress=False,
                   ablations=False)
    b = position_buckets(res.by_position)  # 96 positions: log buckets
    assert b.end[-1] == 96 and len(b.start) == 8
    ok = b.n_tokens > 0
    assert float((b.fvu[ok] * b.n_tokens[ok]).sum() / b.n_tokens.sum()) == pytest.approx(res.fvu)
    okl = b.n_loss_tokens > 0
    pooled = float((b.delta_loss[okl] * b.n_loss_tokens[okl]).sum() / b.n_loss_tokens.sum())
    assert pooled == pytest.approx(res.delta_loss, abs=1e-9)


def test_datasets_each_equal_their_own_evaluation(kind_model):
    sources = {"eval": sample_tokens(kind_model.tokenizer, 4, 48, "eval"),
               "train": sample_tokens(kind_model.tokenizer, 4, 48, "train")}
    sae = sae_with_l0(kind_model, sources["train"], 0.1)
    out = evaluate_datasets(kind_model, sae, sources, progress=False)
    assert list(out) == ["eval", "train"]
    for name, tokens in sources.items():
        alone = evaluate(kind_model, sae, tokens, progress=False)
        assert out[name].delta_loss == pytest.approx(alone.delta_loss, abs=1e-12)
        assert out[name].fvu == pytest.approx(alone.fvu, rel=1e-12)
    assert out["eval"].clean_loss != out["train"].clean_loss


def test_transfer_reports_both_models_and_the_difference(tiny_model):
    from gemma_scope_ext.models.loading import tiny_gemma2

    tokens = sample_tokens(tiny_model.tokenizer, 4, 48)
    sae = sae_with_l0(tiny_model, tokens, 0.1)
    other = tiny_gemma2()  # a "fine-tuned" copy: block 1's MLP output 30% louder
    with torch.no_grad():
        other.blocks[1].ln2_post.w.mul_(1.3)
    tr = evaluate_transfer(tiny_model, other, sae, iter([tokens[:2], tokens[2:]]), progress=False)
    src, tgt = evaluate(tiny_model, sae, tokens, progress=False), evaluate(other, sae, tokens,
                                                                            progress=False)
    assert tr.source.delta_loss == pytest.approx(src.delta_loss, abs=1e-9)
    assert tr.target.delta_loss == pytest.approx(tgt.delta_loss, abs=1e-9)
    assert tr.delta_loss_change == pytest.approx(tgt.delta_loss - src.delta_loss, abs=1e-9)
    assert tr.fvu_change == pytest.approx(tgt.fvu - src.fvu) and abs(tr.fvu_change) > 1e-3
    assert tr.l0_change == pytest.approx(tgt.l0 - src.l0)
    same = evaluate_transfer(tiny_model, tiny_model, sae, tokens, progress=False)
    assert same.delta_loss_change == 0 and same.fvu_change == 0


def test_pareto_frontier_by_hand():
    #        a   b   c   d   e
    l0 = [10, 20, 30, 40, 20]
    dl = [5.0, 3.0, 4.0, 1.0, 3.5]
    assert pareto_frontier(l0, dl) == [0, 1, 3]
    assert pareto_frontier([5], [0.1]) == [0]


def test_sweep_over_l0_variants(tiny_model, tmp_path):
    tokens = sample_tokens(tiny_model.tokenizer, 4, 48)
    fits = sample_tokens(tiny_model.tokenizer, 16, 48, "train")
    saes = {f"l0_{f}": sae_with_l0(tiny_model, fits, f, seed=i)
            for i, f in enumerate([0.02, 0.1, 0.4])}
    sweep = compare_saes(tiny_model, saes, tokens, progress=False)
    l0s = [r.l0 for r in sweep.results]
    assert l0s == sorted(l0s) and l0s[0] < l0s[-1]
    for name, res in zip(sweep.names, sweep.results, strict=True):
        assert res.delta_loss == pytest.approx(
            evaluate(tiny_model, saes[name], tokens, progress=False).delta_loss, abs=1e-9)
    expected = pareto_frontier(l0s, [r.delta_loss for r in sweep.results])
    assert sweep.frontier == [sweep.names[i] for i in expected]
    assert sweep.frontier[0] == "l0_0.02"  # the sparsest is always on the frontier
    path = write_json(tmp_path / "sweep.json", sweep)
    data = json.loads(path.read_text())
    assert data["frontier"] == sweep.frontier
    assert data["results"]["l0_0.1"]["delta_loss"] == pytest.approx(sweep.results[1].delta_loss)
    assert data["results"]["l0_0.1"]["by_position"]["delta_loss"][0] is None  # BOS: no value
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.json"]  # no temp file left behind
