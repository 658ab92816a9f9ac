"""Test helper: FeatureData with every latent alive and every slot full, at any width and vocabulary.

Token ids are log-uniform over the vocabulary (a Zipf-like spread, as in text), activations in the
windows are non-zero 30% of the time: a pessimistic stand-in for a Gemma Scope SAE's records when
sizing the site.
"""

from __future__ import annotations

import math

import torch

from gemma_scope_ext.features import FeatureConfig, FeatureData, SAEInfo


def synthetic_feature_data(d_sae: int, config: FeatureConfig | None = None, vocab: int = 256_000,
                           seed: int = 0) -> FeatureData:  # fmt: skip
    cfg = config or FeatureConfig()
    g = torch.Generator().manual_seed(seed)

    def part(m: int) -> dict[str, torch.Tensor]:
        shape = (d_sae, m, cfg.window)
        acts = torch.rand(shape, generator=g) * 10 * (torch.rand(shape, generator=g) < 0.3)
        return {
            "value": torch.rand(d_sae, m, generator=g).sort(1, descending=True).values * 10 + 0.1,
            "row": torch.randint(0, 10**6, (d_sae, m), generator=g),
            "pos": torch.randint(0, 1024, (d_sae, m), generator=g),
            "tokens": (torch.exp(torch.rand(shape, generator=g) * math.log(vocab)) - 1).int(),
            "acts": acts,
        }

    top, sample = part(cfg.top_k), part(cfg.reservoir)
    top["value"] = top["value"] + 10  # above every reservoir value
    hist = torch.randint(0, 1000, (d_sae, cfg.n_bins), generator=g)
    n = cfg.n_logits
    output = {"promoted_ids": torch.randint(0, vocab, (d_sae, n), generator=g),
              "promoted_values": torch.rand(d_sae, n, generator=g),
              "suppressed_ids": torch.randint(0, vocab, (d_sae, n), generator=g),
              "suppressed_values": -torch.rand(d_sae, n, generator=g)}  # fmt: skip
    ids = torch.cat([top["tokens"].flatten(), sample["tokens"].flatten(),
                     output["promoted_ids"].flatten(), output["suppressed_ids"].flatten()])
    info = SAEInfo("synthetic", "blocks.0.hook_resid_post", "blocks.0.hook_resid_post", "res", 0,
                   "gemma-2-2b")  # fmt: skip
    return FeatureData(info, cfg, 10**7, hist.sum(1), hist.sum(1).double(), hist,
                       torch.full((d_sae,), 5, dtype=torch.int32), top, sample, output,
                       {i: f"tok{i}" for i in torch.unique(ids).tolist()}, (0, 1, 2))  # fmt: skip
