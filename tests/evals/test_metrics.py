"""``evaluate`` against plain-hooks computations written here, and against SAELens's ``run_evals``."""

from __future__ import annotations

import math

import pytest
import torch
from sae_lens.evals import EvalConfig, run_evals
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.sae import SAEMetadata
from sae_lens.saes.transcoder import JumpReLUTranscoder, JumpReLUTranscoderConfig
from sae_lens.training.activation_scaler import ActivationScaler

from gemma_scope_ext.evals.metrics import evaluate, evaluate_many, site_means

pytestmark = pytest.mark.usefixtures("one_thread")


SPECIAL = torch.tensor([0, 1, 2])  # pad, eos, bos of the tiny tokenizer
HOOKS = {
    "res": "blocks.2.hook_resid_post",
    "mlp": "blocks.1.hook_mlp_out",
    "att": "blocks.3.attn.hook_z",
    "embedding": "hook_embed",
}


def _flat(a):
    return a.flatten(2) if a.ndim == 4 else a


def random_jumprelu(model, tokens, hook_in, d_sae=192, hook_out=None, seed=0, **cfg_kwargs):
    """A JumpReLU SAE (or transcoder when ``hook_out`` is given) with random weights whose
    thresholds make each latent fire on ~20% of tokens; latents 0..4 are made dead."""
    g = torch.Generator().manual_seed(seed)
    _, cache = model.run_with_cache(tokens, names_filter=[hook_in] + ([hook_out] if hook_out else []))
    x = _flat(cache[hook_in]).flatten(0, 1)
    d_in = x.shape[-1]
    if hook_out is None:
        cfg = JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(hook_name=hook_in),
                                **cfg_kwargs)
        sae, d_out = JumpReLUSAE(cfg), d_in
    else:
        d_out = _flat(cache[hook_out]).shape[-1]
        cfg = JumpReLUTranscoderConfig(
            d_in=d_in, d_sae=d_sae, d_out=d_out, apply_b_dec_to_input=False,
            metadata=SAEMetadata(hook_name=hook_in, hook_name_out=hook_out),
        )
        sae = JumpReLUTranscoder(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / x.norm(dim=-1).mean())
        sae.W_dec.copy_(torch.randn(d_sae, d_out, generator=g) * 0.1 * x.norm(dim=-1).mean() / 8)
        sae.b_enc.zero_()
        sae.b_dec.copy_(torch.randn(d_out, generator=g) * 0.01)
        pre = x @ sae.W_enc
        sae.threshold.copy_(pre.quantile(0.8, dim=0).clamp(min=1e-3))
        sae.threshold[:5] = 1e9
    return sae


def reference(model, sae, tokens, hook_in, hook_out):
    """Every metric from one full forward per variant with plain hooks, no streaming."""
    keep = ~torch.isin(tokens, SPECIAL)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[hook_in, hook_out])
        x, target = _flat(cache[hook_in]), _flat(cache[hook_out])
        feats = sae.encode(x)
        recon = sae.decode(feats)

        def replace(value):
            def hook(act, hook):
                new = value.expand(*act.shape[:2], -1).reshape(act.shape)
                mask = keep.view(*keep.shape, *[1] * (act.ndim - 2))
                return torch.where(mask, new, act)

            return [(hook_out, hook)]

        def ce(hooks):
            return model.run_with_hooks(tokens, return_type="loss", loss_per_token=True,
                                        fwd_hooks=hooks)

        lk = keep[:, :-1]
        xs, rs = target[keep].double(), recon[keep].double()
        clean = ce([])
        return {
            "clean": clean[lk].mean().item(),
            "delta": (ce(replace(recon)) - clean)[lk].mean().item(),
            "delta_tokens": (ce(replace(recon)) - clean) * lk,
            "zero": ce(replace(torch.zeros(target.shape[-1])))[lk].mean().item(),
            "mean": ce(replace(target[keep].mean(0)))[lk].mean().item(),
            "fvu": (((xs - rs) ** 2).sum() / ((xs - xs.mean(0)) ** 2).sum()).item(),
            "mse": ((xs - rs) ** 2).sum(-1).mean().item(),
            "l0": (feats[keep] != 0).sum(-1).double().mean().item(),
            "l0_tokens": (feats[keep] != 0).sum(-1),
            "freq": (feats[keep] != 0).double().mean(0),
        }


# Every site on the HookedTransformer; on the bridge the two whose hooks differ most from its
# internal names (hook_embed, and hook_z, 4-d over the heads); test_kinds.py compares the rest.
@pytest.mark.parametrize(("model_kind", "site"), [*(("hooked", s) for s in HOOKS),
                                                  ("bridge", "att"), ("bridge", "embedding")])
def test_metrics_equal_plain_hooks(kind_model, eval_tokens, site):
    hook = HOOKS[site]
    sae = random_jumprelu(kind_model, eval_tokens, hook)
    ref = reference(kind_model, sae, eval_tokens, hook, hook)
    res = evaluate(kind_model, sae, eval_tokens, batch_size=3, progress=False)
    assert res.clean_loss == pytest.approx(ref["clean"], abs=1e-5)
    assert res.delta_loss == pytest.approx(ref["delta"], abs=2e-5)
    assert abs(res.delta_loss) > 1e-3  # the random SAE must actually hurt
    assert res.zero_ablation_loss == pytest.approx(ref["zero"], abs=2e-5)
    assert res.mean_ablation_loss == pytest.approx(ref["mean"], abs=2e-5)
    assert res.fvu == pytest.approx(ref["fvu"], rel=1e-5)
    assert res.mse == pytest.approx(ref["mse"], rel=1e-5)
    assert res.l0 == pytest.approx(ref["l0"], abs=1e-9)
    torch.testing.assert_close(res.latent_frequency, ref["freq"])
    assert res.frac_dead == pytest.approx((ref["freq"] == 0).double().mean().item())
    assert res.frac_dead >= 5 / 192  # latents 0..4 were killed
    assert res.frac_dense == pytest.approx((ref["freq"] > 0.1).double().mean().item())
    assert 0 < res.frac_dense < 1 and 0 < res.frac_dead < 1
    ranked = ref["l0_tokens"].sort().values
    for q, got in zip([0.1, 0.5, 0.9], res.l0_quantiles([0.1, 0.5, 0.9]), strict=True):
        assert got == ranked[math.ceil(q * len(ranked)) - 1]  # smallest L0 with CDF >= q
    assert res.n_tokens == int((~torch.isin(eval_tokens, SPECIAL)).sum())
    assert int(res.l0_histogram.sum()) == res.n_tokens


def test_transcoder_reads_in_hook_and_splices_out_hook(kind_model, eval_tokens):
    hook_in, hook_out = "blocks.2.ln2.hook_normalized", "blocks.2.hook_mlp_out"
    tc = random_jumprelu(kind_model, eval_tokens, hook_in, hook_out=hook_out)
    ref = reference(kind_model, tc, eval_tokens, hook_in, hook_out)
    res = evaluate(kind_model, tc, eval_tokens, batch_size=4, progress=False)
    assert (res.hook_name, res.hook_name_out) == (hook_in, hook_out)
    for name, value in [("delta", res.delta_loss), ("zero", res.zero_ablation_loss),
                        ("mean", res.mean_ablation_loss)]:
        assert value - (name != "delta") * res.clean_loss == pytest.approx(
            ref[name] - (name != "delta") * ref["clean"], abs=2e-5)
    assert res.fvu == pytest.approx(ref["fvu"], rel=1e-5)  # against the MLP output
    assert res.l0 == pytest.approx(ref["l0"])


def test_transcoder_without_output_hook_is_refused(tiny_model, eval_tokens):
    tc = random_jumprelu(tiny_model, eval_tokens, "blocks.2.ln2.hook_normalized",
                         hook_out="blocks.2.hook_mlp_out")
    tc.cfg.metadata = SAEMetadata(hook_name="blocks.2.ln2.hook_normalized")
    with pytest.raises(ValueError, match="hook_name_out"):
        evaluate(tiny_model, tc, eval_tokens, progress=False)


def test_wrong_width_is_refused(tiny_model, eval_tokens):
    sae = random_jumprelu(tiny_model, eval_tokens, "blocks.2.hook_resid_post")
    sae.cfg.metadata.hook_name = "blocks.2.attn.hook_z"  # 96 wide, SAE expects 128
    with pytest.raises(ValueError, match="d_in 128"):
        evaluate(tiny_model, sae, eval_tokens, progress=False)


def identity_sae(d: int, hook: str) -> JumpReLUSAE:
    """d_sae = 2 d with W_enc = [I, -I], W_dec = [I; -I], threshold 0: relu(x) - relu(-x) = x."""
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=2 * d, metadata=SAEMetadata(hook_name=hook)))
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([torch.eye(d), -torch.eye(d)], dim=1))
        sae.W_dec.copy_(sae.W_enc.T)
        for p in (sae.b_enc, sae.b_dec, sae.threshold):
            p.zero_()
    return sae


@pytest.mark.parametrize("hook,d", [("blocks.1.hook_resid_post", 128), ("blocks.0.attn.hook_z", 96)])
def test_perfect_reconstruction_costs_nothing(tiny_model, eval_tokens, hook, d):
    res = evaluate(tiny_model, identity_sae(d, hook), eval_tokens, progress=False)
    assert res.delta_loss == pytest.approx(0.0, abs=1e-6)
    assert res.fvu == pytest.approx(0.0, abs=1e-10)
    assert res.loss_recovered == pytest.approx(1.0, abs=1e-5)
    # exactly one of relu(x_i), relu(-x_i) is non-zero unless x_i == 0
    assert 0.95 * d <= res.l0 <= d


class ErrorTermSAE(torch.nn.Module):
    """Splices x_hat + (x - x_hat): the SAE's own latents, but the exact activation out."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.cfg, self.W_enc = inner, inner.cfg, inner.W_enc

    def forward_with_activations(self, x):
        feats = self.inner.encode(x)
        recon = self.inner.decode(feats)
        return recon + (x - recon), feats


def test_error_term_splice_gives_clean_loss(tiny_model, eval_tokens):
    inner = random_jumprelu(tiny_model, eval_tokens, "blocks.1.hook_resid_post")
    res = evaluate(tiny_model, ErrorTermSAE(inner), eval_tokens, progress=False)
    plain = evaluate(tiny_model, inner, eval_tokens, progress=False)
    assert res.clean_loss == plain.clean_loss
    assert res.delta_loss == pytest.approx(0.0, abs=1e-5)
    assert plain.delta_loss > 1e-3
    assert res.l0 == plain.l0 > 0


class SpecialTokenSaboteur(torch.nn.Module):
    """Exact everywhere except at special-token positions, where it is wildly wrong and every
    latent fires: a metric that let those positions in would show it."""

    def __init__(self, d, hook, special_mask):
        super().__init__()
        self.cfg = JumpReLUSAEConfig(d_in=d, d_sae=8, metadata=SAEMetadata(hook_name=hook))
        self.W_enc, self.special = torch.nn.Parameter(torch.zeros(d, 8)), special_mask

    def forward_with_activations(self, x):
        m = self.special[..., None].to(x.dtype)
        return x + 1e3 * m, m.expand(*x.shape[:2], 8).clone()


def test_special_tokens_enter_no_metric(tiny_model, eval_tokens):
    special = torch.isin(eval_tokens, SPECIAL)
    assert special[:, 0].all() and special[:, 1:].any()  # BOS and some EOS
    sab = SpecialTokenSaboteur(128, "blocks.2.hook_resid_post", special)
    res = evaluate(tiny_model, sab, eval_tokens, batch_size=len(eval_tokens), progress=False)
    assert res.delta_loss == pytest.approx(0.0, abs=1e-6)
    assert res.fvu == 0.0 and res.l0 == 0.0 and res.frac_dead == 1.0
    assert res.by_position.n_tokens[0] == 0 and res.by_position.n_loss_tokens[0] == 0
    # the zero ablation must leave BOS alone too: ablate a site whose BOS value matters
    tokens = eval_tokens.clone()
    ref = reference(tiny_model, identity_sae(128, "blocks.0.hook_resid_post"), tokens,
                    "blocks.0.hook_resid_post", "blocks.0.hook_resid_post")
    res = evaluate(tiny_model, identity_sae(128, "blocks.0.hook_resid_post"), tokens,
                   progress=False)
    assert res.zero_ablation_loss == pytest.approx(ref["zero"], abs=2e-5)


def test_positions_average_back_and_match_reference(tiny_model, eval_tokens):
    hook = "blocks.2.hook_resid_post"
    sae = random_jumprelu(tiny_model, eval_tokens, hook)
    res = evaluate(tiny_model, sae, eval_tokens, batch_size=5, progress=False)
    p = res.by_position
    n, nl = p.n_tokens.double(), p.n_loss_tokens.double()

    def avg(values, weights):
        ok = weights > 0
        return float((values[ok] * weights[ok]).sum() / weights.sum())

    assert avg(p.fvu, n) == pytest.approx(res.fvu, rel=1e-9)
    assert avg(p.l0, n) == pytest.approx(res.l0, rel=1e-9)
    assert avg(p.delta_loss, nl) == pytest.approx(res.delta_loss, abs=1e-9)
    assert avg(p.clean_loss, nl) == pytest.approx(res.clean_loss, abs=1e-9)
    ref = reference(tiny_model, sae, eval_tokens, hook, hook)["delta_tokens"]
    lk = (~torch.isin(eval_tokens, SPECIAL))[:, :-1]
    expected = ref.sum(0) / lk.sum(0)
    torch.testing.assert_close(p.delta_loss[:-1][lk.sum(0) > 0],
                               expected[lk.sum(0) > 0].double(), atol=2e-5, rtol=0)
    assert math.isnan(p.delta_loss[-1])  # the last token predicts nothing


def test_streamed_batches_equal_one_tensor(tiny_model, eval_tokens):
    sae = random_jumprelu(tiny_model, eval_tokens, "blocks.1.hook_mlp_out")
    whole = evaluate(tiny_model, sae, eval_tokens, batch_size=8, progress=False)
    means = site_means(tiny_model, ["blocks.1.hook_mlp_out"], eval_tokens, progress=False)
    ragged = [eval_tokens[:3], eval_tokens[3:4, :40], eval_tokens[3:4, 40:], eval_tokens[4:]]
    # a one-shot generator, with rows of different lengths (the 24-token row has no BOS)
    streamed = evaluate(tiny_model, sae, (b for b in ragged[:1] + ragged[3:]), batch_size=2,
                        progress=False, means=means)
    also = evaluate(tiny_model, sae, iter([eval_tokens[:3], eval_tokens[3:]]), progress=False)
    assert also.delta_loss == pytest.approx(whole.delta_loss, abs=1e-6)
    assert also.mean_ablation_loss == pytest.approx(whole.mean_ablation_loss, abs=1e-6)
    no_row3 = torch.cat([eval_tokens[:3], eval_tokens[4:]])
    ref = evaluate(tiny_model, sae, no_row3, progress=False, means=means)
    assert streamed.fvu == pytest.approx(ref.fvu, rel=1e-9)
    assert streamed.mean_ablation_loss == pytest.approx(ref.mean_ablation_loss, abs=1e-6)
    short = evaluate(tiny_model, sae, ragged[1:3], progress=False, ablations=False)
    assert short.zero_ablation_loss is None and short.by_position.n_tokens.numel() == 40


def test_many_saes_share_a_pass_and_match_one_by_one(tiny_model, eval_tokens):
    hook = "blocks.2.hook_resid_post"
    saes = [random_jumprelu(tiny_model, eval_tokens, hook, seed=s) for s in (1, 2)]
    saes.append(random_jumprelu(tiny_model, eval_tokens, "blocks.0.hook_mlp_out", seed=3))
    together = evaluate_many(tiny_model, saes, eval_tokens, progress=False)
    for sae, res in zip(saes, together, strict=True):
        alone = evaluate(tiny_model, sae, eval_tokens, progress=False)
        assert res.delta_loss == pytest.approx(alone.delta_loss, abs=1e-9)
        assert res.fvu == pytest.approx(alone.fvu, rel=1e-12)
        assert res.zero_ablation_loss == pytest.approx(alone.zero_ablation_loss, abs=1e-9)
    assert together[0].delta_loss != together[1].delta_loss


def test_bf16_model_is_close_to_fp32(eval_tokens, tiny_model):
    from gemma_scope_ext.models.loading import tiny_gemma2

    bf16 = tiny_gemma2(dtype=torch.bfloat16)
    sae = random_jumprelu(tiny_model, eval_tokens, "blocks.2.hook_resid_post")
    a = evaluate(tiny_model, sae, eval_tokens, progress=False)
    b = evaluate(bf16, sae, eval_tokens, progress=False)
    assert b.clean_loss == pytest.approx(a.clean_loss, abs=0.05)
    assert b.delta_loss == pytest.approx(a.delta_loss, abs=0.05)
    assert b.fvu == pytest.approx(a.fvu, rel=0.05)
    assert b.l0 == pytest.approx(a.l0, rel=0.05)


class _TokenStore:
    """What run_evals asks of an ActivationsStore: the same fixed batch every time."""

    def __init__(self, tokens):
        self.tokens, self.context_size, self.store_batch_size_prompts = tokens, tokens.shape[1], 8

    def get_batch_tokens(self, n):
        assert n == len(self.tokens)
        return self.tokens

    def reset_input_dataset(self):
        pass


@pytest.mark.parametrize("hook", ["blocks.2.hook_resid_post", "blocks.3.attn.hook_z"])
def test_agrees_with_saelens_run_evals(tiny_model, eval_tokens, hook):
    sae = random_jumprelu(tiny_model, eval_tokens, hook,
                          reshape_activations="hook_z" if "hook_z" in hook else "none")
    cfg = EvalConfig(batch_size_prompts=len(eval_tokens), n_eval_reconstruction_batches=1,
                     compute_ce_loss=True, n_eval_sparsity_variance_batches=1,
                     compute_sparsity_metrics=True, compute_variance_metrics=True)
    theirs, _ = run_evals(sae, _TokenStore(eval_tokens), tiny_model, ActivationScaler(), cfg)
    ours = evaluate(tiny_model, sae, eval_tokens, progress=False)
    perf = theirs["model_performance_preservation"]
    assert ours.clean_loss == pytest.approx(perf["ce_loss_without_sae"], abs=1e-5)
    assert ours.delta_loss == pytest.approx(
        perf["ce_loss_with_sae"] - perf["ce_loss_without_sae"], abs=2e-5)
    quality = theirs["reconstruction_quality"]
    assert ours.fvu == pytest.approx(1 - quality["explained_variance"], rel=1e-5)
    assert ours.mse == pytest.approx(quality["mse"], rel=1e-5)
    assert ours.l0 == pytest.approx(theirs["sparsity"]["l0"], rel=1e-6)
    # SAELens zero-ablates BOS too; we leave it alone, so only the direction is shared
    assert ours.zero_ablation_loss > ours.clean_loss
    assert sae.hook_z_reshaping_mode == ("hook_z" in hook)  # restored after evaluate
