"""The SAE shipped with the tiny Gemma 2 loads offline, reads the hook it names, and is trained.

Reference: the fraction of variance it leaves unexplained on held-out activations, against a
negative control (the same SAE with its decoder rows shuffled) that must do far worse.
"""

from __future__ import annotations

import torch

from gemma_scope_ext.saes import tiny_sae
from gemma_scope_ext.saes.tiny import TINY_SAE_HOOK


def _fvu(recons, x):
    return float((recons - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def test_tiny_sae_reconstructs_held_out_activations(tiny_model, eval_tokens):
    sae = tiny_sae()
    assert sae.cfg.metadata.hook_name == TINY_SAE_HOOK and sae.cfg.d_in == tiny_model.cfg.d_model
    _, cache = tiny_model.run_with_cache(eval_tokens, names_filter=TINY_SAE_HOOK)
    x = cache[TINY_SAE_HOOK][:, 1:].reshape(-1, sae.cfg.d_in)  # BOS left out, as in training
    with torch.no_grad():
        fvu = _fvu(sae(x), x)
        acts = sae.encode(x)
        shuffled = acts @ sae.W_dec[torch.randperm(sae.cfg.d_sae, generator=torch.Generator().manual_seed(0))] + sae.b_dec
    assert fvu < 0.3, fvu
    assert _fvu(shuffled, x) > 1.0  # the check can fail
    assert 1 < (acts > 0).float().sum(-1).mean() < sae.cfg.d_sae / 4  # sparse, not dead
