"""``gemma-scope demo``: the main job on the embedded tiny Gemma 2, offline."""

from __future__ import annotations

import argparse

import torch

from gemma_scope_ext.gemma2 import tiny_gemma2
from gemma_scope_ext.sites import SITES, hook_name, site_d_in


def main(args: argparse.Namespace) -> int:
    model = tiny_gemma2()
    tokens = model.to_tokens(args.prompt)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    print(f"tiny Gemma 2: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}; "
          f"prompt of {tokens.shape[1]} tokens (BOS included)")
    print(f"{'site':<11} {'layer':>5}  {'hook':<36} {'d_in':>5} {'mean |x|':>9}")
    for site in SITES.values():
        layers = range(model.cfg.n_layers) if site.per_layer else [None]
        for layer in layers:
            name = hook_name(model, site.name, layer)
            acts = cache[name][0, 1:].flatten(1)  # BOS excluded, heads flattened
            assert acts.shape[-1] == site_d_in(model, site.name)
            print(f"{site.name:<11} {layer if layer is not None else '-':>5}  {name:<36} "
                  f"{acts.shape[-1]:>5} {acts.norm(dim=-1).mean():>9.3f}")
    return 0
