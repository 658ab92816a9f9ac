"""A planted-feature SAE over the tiny Gemma 2, and brute-force answers computed from all activations.

Latents of the SAE at ``blocks.1.hook_resid_post`` (random JumpReLU latents otherwise):

- ``PLANTED``: encoder column x*/|x*|^2 for the non-special token x* with the largest residual
  norm, so its activation x.x*/|x*|^2 is at most 1 (Cauchy-Schwarz) and exactly 1 only at x*: its
  top context is known in advance;
- ``CONSTANT``: zero encoder column and bias 2: fires with activation 2 on every non-special token,
  so every firing ties and the top-k must be the earliest tokens of the stream;
- ``DEAD``: a threshold no activation reaches.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

from gemma_scope_ext.models.text import sample_tokens
from tests.helpers.random_saes import random_jumprelu

HOOK = "blocks.1.hook_resid_post"
N_ROWS, SEQ_LEN, D_SAE = 12, 48, 40
PLANTED, CONSTANT, DEAD = 5, 6, 7
SPECIAL = (0, 1, 2)  # pad, eos, bos of the tiny tokenizer


class Planted(NamedTuple):
    model: object
    sae: object
    tokens: torch.Tensor
    """[N_ROWS, SEQ_LEN] token ids."""
    acts: torch.Tensor
    """[N_ROWS, SEQ_LEN, D_SAE] brute-force latent activations, zero on special tokens."""
    peak: tuple[int, int]
    """(row, position) of x*, the planted latent's top context."""


@pytest.fixture(scope="package")
def planted(tiny_model) -> Planted:
    torch.manual_seed(0)
    tokens = sample_tokens(tiny_model.tokenizer, N_ROWS, SEQ_LEN, "eval")
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(tokens, names_filter=[HOOK])
        x = cache[HOOK]
        special = torch.isin(tokens, torch.tensor(SPECIAL))
        sae = random_jumprelu({HOOK: x}, HOOK, d_sae=D_SAE, seed=7)
        sae.threshold.fill_(1.5)  # sparser than the helper's default
        norms = x.norm(dim=-1).masked_fill(special, 0)
        flat = int(norms.argmax())
        peak = (flat // SEQ_LEN, flat % SEQ_LEN)
        star = x[peak]
        sae.W_enc[:, PLANTED] = star / star.pow(2).sum()
        sae.b_enc[PLANTED], sae.threshold[PLANTED] = 0.0, 0.6
        sae.W_enc[:, CONSTANT] = 0.0
        sae.b_enc[CONSTANT], sae.threshold[CONSTANT] = 2.0, 1.0
        sae.threshold[DEAD] = 1e6
        acts = sae.encode(x) * ~special[..., None]
    return Planted(tiny_model, sae, tokens, acts, peak)


def brute_force_top(acts: torch.Tensor, latent: int, k: int) -> list[tuple[float, int, int]]:
    """(value, row, pos) of the k largest activations of ``latent``, ties to the earlier token."""
    n_pos = acts.shape[1]
    v = acts[..., latent].flatten()
    idx = v.nonzero().squeeze(1).tolist()
    best = sorted(idx, key=lambda i: (-float(v[i]), i))[:k]
    return [(float(v[i]), i // n_pos, i % n_pos) for i in best]


def windows(tokens: torch.Tensor, acts: torch.Tensor, latent: int, row: int, pos: int,
            before: int, after: int) -> tuple[list[int], list[float]]:  # fmt: skip
    """Token ids (-1 outside the row) and ``latent``'s activations around (row, pos), by hand."""
    ids, values = [], []
    for p in range(pos - before, pos + after + 1):
        inside = 0 <= p < tokens.shape[1]
        ids.append(int(tokens[row, p]) if inside else -1)
        values.append(float(acts[row, p, latent]) if inside else 0.0)
    return ids, values
