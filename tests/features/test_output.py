"""Promoted/suppressed tokens and head norms against direct computations, and what they mean."""

from __future__ import annotations

import pytest
import torch

from gemma_scope_ext.features import FeatureConfig, collect_features
from gemma_scope_ext.features.build import sae_info
from gemma_scope_ext.features.output import output_view
from gemma_scope_ext.pretrained.catalog import get_entry
from gemma_scope_ext.pretrained.loader import sae_config
from gemma_scope_ext.saes.sae import GemmaScopeSAE
from tests.helpers.random_saes import four_site_saes, random_jumprelu

pytestmark = pytest.mark.usefixtures("one_thread")
N = 8


@pytest.fixture(scope="module")
def saes(tiny_model, eval_tokens):
    _, cache = tiny_model.run_with_cache(eval_tokens[:2])
    att3 = random_jumprelu(cache, "blocks.3.attn.hook_z", d_sae=24, seed=11)
    res3 = random_jumprelu(cache, "blocks.3.hook_resid_post", d_sae=24, seed=12)
    return [*four_site_saes(cache), att3, res3]


def _direct(model, sae, final_gain: bool = True) -> torch.Tensor:
    """Scores in float64: W_dec (through W_O and ln1_post's gain for hook_z) * ln_final gain @ W_U."""
    w = sae.W_dec.detach().double()
    hook = sae.cfg.metadata.hook_name_out or sae.cfg.metadata.hook_name
    if hook.endswith("attn.hook_z"):
        block = model.blocks[int(hook.split(".")[1])]
        heads = [w[:, h * model.cfg.d_head:(h + 1) * model.cfg.d_head] @ block.attn.W_O[h].double()
                 for h in range(model.cfg.n_heads)]  # fmt: skip
        w = sum(heads) * block.ln1_post.w.double()
    gain = model.ln_final.w.double() if final_gain else 1.0
    return (w * gain) @ model.W_U.double()


def test_promoted_tokens_equal_a_direct_product(kind_model, tiny_model, saes):
    # The reference reads the HookedTransformer's weights, which hold Gemma's norm gain 1 + w.
    for sae in saes:
        hook = sae.cfg.metadata.hook_name_out or sae.cfg.metadata.hook_name
        view = output_view(kind_model, sae, hook, N)
        scores = _direct(tiny_model, sae)
        top, bottom = scores.topk(N, dim=1), scores.topk(N, dim=1, largest=False)
        assert torch.equal(view.promoted_ids, top.indices), hook
        assert torch.equal(view.suppressed_ids, bottom.indices), hook
        assert torch.allclose(view.promoted_values.double(), top.values, rtol=1e-5, atol=1e-6)
        assert torch.allclose(view.suppressed_values.double(), bottom.values, rtol=1e-5, atol=1e-6)
        # negative control: without the final norm's gain the ranking is a different one
        plain = _direct(tiny_model, sae, final_gain=False).topk(N, dim=1).indices
        assert not torch.equal(plain, top.indices)


def test_head_norms_are_the_decoder_norm_of_each_head_slice(tiny_model, saes):
    att = saes[0]
    view = output_view(tiny_model, att, "blocks.0.attn.hook_z", N)
    d_head = tiny_model.cfg.d_head
    for h in range(tiny_model.cfg.n_heads):
        want = att.W_dec.detach()[:, h * d_head:(h + 1) * d_head].norm(dim=1)
        assert torch.allclose(view.head_norms[:, h], want)
    assert output_view(tiny_model, saes[1], "blocks.1.hook_resid_post", N).head_norms is None


def _pre_cap(logits, cap):
    return cap * torch.atanh(logits.double() / cap)


@pytest.mark.parametrize("which", [4, 5], ids=["att", "res"])
def test_scores_are_the_logit_change_with_norm_scales_frozen(tiny_model, eval_tokens, saes, which):
    """Adding a decoder row at the last block moves pre-soft-cap logits by score / (frozen scales)."""
    sae, tokens, pos, latent = saes[which], eval_tokens[:1], 20, 3
    hook = sae.cfg.metadata.hook_name
    frozen = ["ln_final.hook_scale", "blocks.3.ln1_post.hook_scale", "blocks.3.hook_mlp_out"]
    _, clean = tiny_model.run_with_cache(tokens, names_filter=frozen)

    def add(act, hook):
        act = act.clone()
        act[0, pos] += sae.W_dec[latent].detach().view(act.shape[2:])
        return act

    hooks = [(hook, add)] + [(h, lambda act, hook, h=h: clean[h]) for h in frozen]
    cap = tiny_model.cfg.output_logits_soft_cap
    with torch.no_grad():
        delta = (_pre_cap(tiny_model.run_with_hooks(tokens, fwd_hooks=hooks), cap)
                 - _pre_cap(tiny_model(tokens), cap))[0, pos]  # fmt: skip
    scale = clean["ln_final.hook_scale"][0, pos, 0].double()
    if which == 4:  # attention: the post-attention norm's scale is frozen too
        scale = scale * clean["blocks.3.ln1_post.hook_scale"][0, pos, 0].double()
    score = _direct(tiny_model, sae)[latent]
    assert torch.allclose(delta, score / scale, rtol=1e-3, atol=1e-3)
    view = output_view(tiny_model, sae, hook, N)
    assert view.promoted_ids[latent].tolist() == delta.topk(N).indices.tolist()


def test_collected_data_carries_the_output_view(tiny_model, eval_tokens, saes):
    data = collect_features(tiny_model, saes[3], eval_tokens[:2], progress=False,
                            config=FeatureConfig(n_logits=4))[0]  # fmt: skip
    view = output_view(tiny_model, saes[3], "blocks.3.hook_mlp_out", 4)  # the transcoder's output
    assert data.latent(2).promoted == tuple(zip(view.promoted_ids[2].tolist(),
                                                view.promoted_values[2].tolist(), strict=True))
    assert all(t in data.token_strings for t, _ in data.latent(2).suppressed)


def test_released_saes_link_to_their_neuronpedia_page(tiny_model):
    entry = get_entry("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71")
    assert entry.neuronpedia_id == "gemma-2-2b/20-gemmascope-res-16k"
    sae = GemmaScopeSAE(sae_config(entry, device="meta"))  # the loader's config, no weights
    info = sae_info(tiny_model, sae, "canonical")
    assert info.neuronpedia_id == entry.neuronpedia_id and info.site == "res" and info.layer == 20
