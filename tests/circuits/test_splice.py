"""Splicing: exact with the error term, identical to SAELens's HookedSAETransformer without it."""

from __future__ import annotations

import pytest
import torch
from sae_lens import (
    HookedSAETransformer,
)

from gemma_scope_ext.circuits.splice import site_of, splice
from tests.helpers.random_saes import four_site_saes, random_jumprelu


@pytest.fixture(scope="module")
def setup(tiny_model, eval_tokens):
    tokens = eval_tokens[:2, :32]
    _, cache = tiny_model.run_with_cache(tokens)
    saes = four_site_saes(cache)
    return tokens, cache, saes


@pytest.fixture(scope="module")
def sae_lens_model(tiny_model):
    model = HookedSAETransformer(tiny_model.cfg, tokenizer=tiny_model.tokenizer)
    model.load_state_dict(tiny_model.state_dict(), strict=False)
    return model.eval()


def test_site_of_reads_the_site_table():
    assert site_of("blocks.3.ln2.hook_normalized") == ("transcoder", 3)
    assert site_of("blocks.0.attn.hook_z") == ("att", 0)
    assert site_of("blocks.12.hook_resid_post") == ("res", 12)
    assert site_of("hook_embed") == ("embedding", None)
    assert site_of("blocks.2.hook_resid_pre") == ("blocks.2.hook_resid_pre", 2)


def test_error_term_reproduces_clean_logits_and_exposes_nodes(kind_model, setup):
    tokens, cache, saes = setup
    clean = kind_model(tokens)
    with splice(kind_model, saes) as sp:
        logits, spliced_cache = kind_model.run_with_cache(tokens)
        assert (logits - clean).abs().max() < 1e-5
        for sae in saes:
            site = sp.site(sae)
            x = cache[site.hook_in]
            x = x.flatten(-2) if x.ndim == 4 else x
            nodes = sp.nodes(sae)
            # Features are the SAE's encoding of the clean input; error closes the gap exactly.
            torch.testing.assert_close(nodes.features, sae.encode(x))
            y = cache[site.hook_out]
            y = y.flatten(-2) if y.ndim == 4 else y
            torch.testing.assert_close(nodes.error, y - sae.decode(sae.encode(x)))
            torch.testing.assert_close(spliced_cache[site.acts_hook], nodes.features)
            assert nodes.features.gt(0).any()
    # The model is restored: same hooks, same logits.
    assert not any("hook_sae" in k for k in kind_model.hook_dict)
    torch.testing.assert_close(kind_model(tokens), clean)


def test_without_error_term_matches_hooked_sae_transformer(kind_model, sae_lens_model, setup):
    tokens, _, saes = setup
    with splice(kind_model, saes, use_error_term=False) as sp:
        ours, our_cache = kind_model.run_with_cache(tokens)
    theirs, their_cache = sae_lens_model.run_with_cache_with_saes(
        tokens, saes=saes, use_error_term=False)
    assert (ours - kind_model(tokens)).abs().max() > 0.1  # the reconstruction is not exact
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    for site in sp.sites:
        torch.testing.assert_close(our_cache[site.acts_hook], their_cache[site.acts_hook])
    # SAELens's reshaping for hook_z SAEs is back on after the splice.
    assert saes[0].hook_z_reshaping_mode


def test_feature_ablation_through_hooks_matches_hooked_sae_transformer(
    kind_model, sae_lens_model, setup
):
    tokens, _, saes = setup
    hook = "blocks.1.hook_resid_post.hook_sae_acts_post"

    def ablate(acts, hook):
        acts = acts.clone()
        acts[:, 5:, :10] = 0.0
        return acts

    with splice(kind_model, saes), kind_model.hooks(fwd_hooks=[(hook, ablate)]):
        ours = kind_model(tokens)
    with sae_lens_model.saes(saes=saes, use_error_term=True):
        theirs = sae_lens_model.run_with_hooks(tokens, fwd_hooks=[(hook, ablate)])
    assert (ours - kind_model(tokens)).abs().max() > 1e-3
    # Both add the same terms in another order: fp32 rounding of logits ~10 is ~1e-6 relative;
    # a bridge's logits differ from HookedTransformer's by up to 1.5e-5 before any splice.
    torch.testing.assert_close(ours, theirs, atol=3e-5, rtol=1e-5)


def test_node_gradients_are_downstream_effects_and_upstream_gradients_are_clean(kind_model, setup):
    tokens, _, saes = setup
    target = int(tokens[0, 10])

    def metric(logits):
        return logits[0, 9].log_softmax(-1)[target]

    # Reference by plain hooks: gradients at hook_embed and at the residual stream after block 1.
    saved = {}

    def keeper(name):  # keyed by the name asked for: a bridge's hook.name is its internal name
        def keep(x, hook):
            saved[name] = x
            x.retain_grad()

        return keep

    with torch.enable_grad():
        logits = kind_model.run_with_hooks(
            tokens, fwd_hooks=[(n, keeper(n)) for n in ("hook_embed", "blocks.1.hook_resid_post")])
        metric(logits).backward()
    g_embed = saved["hook_embed"].grad
    g_res = saved["blocks.1.hook_resid_post"].grad
    kind_model.zero_grad(set_to_none=True)

    with splice(kind_model, saes) as sp:
        emb = {}
        logits = kind_model.run_with_hooks(
            tokens, fwd_hooks=[("hook_embed", lambda x, hook: emb.setdefault("x", x))])
        nodes = sp.nodes(("res", 1))
        g_emb, g_f, g_e = torch.autograd.grad(metric(logits),
                                              [emb["x"], nodes.features, nodes.error])
    torch.testing.assert_close(g_emb, g_embed, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(g_e, g_res, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(g_f, g_res @ saes[1].W_dec.detach().T, atol=1e-6, rtol=1e-4)


def test_bad_splices_say_what_is_wrong(tiny_model, setup):
    _, cache, saes = setup
    with pytest.raises(ValueError, match="one SAE per output hook"):
        with splice(tiny_model, [saes[1], random_jumprelu(cache, "blocks.1.hook_resid_post")]):
            pass
    stray = random_jumprelu(cache, "blocks.1.hook_resid_post")
    stray.cfg.metadata.hook_name = "blocks.9.hook_resid_post"
    with pytest.raises(ValueError, match="does not have"):
        with splice(tiny_model, stray):
            pass
    wrong_width = random_jumprelu(cache, "blocks.0.attn.hook_z")
    wrong_width.cfg.metadata.hook_name = "blocks.0.hook_resid_post"
    wrong_width.turn_off_forward_pass_hook_z_reshaping()
    with pytest.raises(ValueError, match="width 96"), splice(tiny_model, wrong_width):
        tiny_model(cache["hook_embed"].new_zeros(1, 4, dtype=torch.long))
    assert not any("hook_sae" in k for k in tiny_model.hook_dict)


def _skip_transcoder(cache, seed=5):
    """The transcoder of ``four_site_saes`` with a random skip connection beside it."""
    from gemma_scope_ext.saes.skip_transcoder import GemmaScopeSkipTranscoder

    plain = random_jumprelu(cache, "blocks.3.ln2.hook_normalized", hook_out="blocks.3.hook_mlp_out",
                            seed=seed)  # fmt: skip
    params = {k: v.detach() for k, v in plain.state_dict().items()}
    d_out, d_in = plain.cfg.d_out, plain.cfg.d_in
    params["W_skip"] = torch.randn(d_out, d_in, generator=torch.Generator().manual_seed(seed)) * 0.2
    return GemmaScopeSkipTranscoder.from_params(params, hook_name=plain.cfg.metadata.hook_name,
                                                hook_name_out=plain.cfg.metadata.hook_name_out)


def test_skip_transcoders_splice_with_their_skip_path(tiny_model, setup):
    tokens, cache, _ = setup
    tc = _skip_transcoder(cache)
    x = cache["blocks.3.ln2.hook_normalized"]
    y_hat = tc.decode(tc.encode(x)) + x @ tc.W_skip.T  # the plain reference

    def replace(act, hook):
        return y_hat

    reference = tiny_model.run_with_hooks(tokens, fwd_hooks=[("blocks.3.hook_mlp_out", replace)])
    with splice(tiny_model, [tc], use_error_term=False):
        ours = tiny_model(tokens)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    # Negative control: the same transcoder without its skip path gives other logits.
    with torch.no_grad():
        saved = tc.W_skip.clone()
        tc.W_skip.zero_()
        with splice(tiny_model, [tc], use_error_term=False):
            assert (tiny_model(tokens) - reference).abs().max() > 1e-2
        tc.W_skip.copy_(saved)
    # With the error term the logits are clean, and the error is what the whole transcoder,
    # skip path included, misses.
    clean = tiny_model(tokens)
    with torch.no_grad(), splice(tiny_model, [tc]) as sp:
        logits = tiny_model(tokens)
        error = sp.nodes(tc).error
    torch.testing.assert_close(logits, clean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(error, cache["blocks.3.hook_mlp_out"] - y_hat, atol=1e-5, rtol=1e-5)
