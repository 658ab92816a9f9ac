"""Random JumpReLU SAEs and transcoders (SAELens's own classes) scaled to a site's activations."""

from __future__ import annotations

import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, JumpReLUTranscoder, JumpReLUTranscoderConfig
from sae_lens.saes.sae import SAEMetadata


def random_jumprelu(cache, hook, d_sae=64, hook_out=None, seed=0):
    """A JumpReLU SAE (or transcoder) with random weights scaled to the activations at ``hook``."""
    g = torch.Generator().manual_seed(seed)
    x = cache[hook].flatten(-2) if hook.endswith("hook_z") else cache[hook]
    d_in, rms = x.shape[-1], x.pow(2).mean().sqrt()
    meta = SAEMetadata(hook_name=hook, hook_name_out=hook_out)
    if hook_out:
        d_out = cache[hook_out].shape[-1]
        sae = JumpReLUTranscoder(JumpReLUTranscoderConfig(
            d_in=d_in, d_sae=d_sae, d_out=d_out, apply_b_dec_to_input=False, metadata=meta))
    else:
        reshape = "hook_z" if hook.endswith("hook_z") else "none"
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=False,
                                            reshape_activations=reshape, metadata=meta))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / (d_in**0.5 * rms))
        sae.W_dec.copy_(torch.randn(d_sae, sae.W_dec.shape[1], generator=g) * rms * 0.3)
        sae.threshold.fill_(1.0)
        sae.b_enc.copy_(torch.randn(d_sae, generator=g) * 0.1)
        sae.b_dec.copy_(torch.randn(sae.b_dec.shape[0], generator=g) * 0.1 * rms)
    return sae


def four_site_saes(cache):
    """One SAE at each kind of site on the tiny model: att (hook_z), res, mlp, and a transcoder."""
    return [
        random_jumprelu(cache, "blocks.0.attn.hook_z", seed=1),
        random_jumprelu(cache, "blocks.1.hook_resid_post", seed=2),
        random_jumprelu(cache, "blocks.2.hook_mlp_out", seed=3),
        random_jumprelu(cache, "blocks.3.ln2.hook_normalized", hook_out="blocks.3.hook_mlp_out",
                        seed=4),
    ]
