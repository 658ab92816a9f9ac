"""Per-latent "keep the m best" buffers over a stream, ranked by one int64 score per firing.

Two rankings share the buffer (``collect.py``):

- top-k contexts rank by activation, ties broken towards the earlier token: the score packs the
  activation's float32 bits (monotone in the value for positive floats) above the complement of the
  token's 32-bit stream index, so no two firings of a latent tie and the result is the exact top-k
  whatever the batching;
- the uniform reservoir ranks by a seeded hash of (token, latent): keeping the m smallest keys over
  the stream is a uniform sample without replacement of the latent's firings (bottom-m sampling),
  and because the key does not depend on what else was seen, it too is independent of batching and
  can be recomputed by brute force.

Each slot carries the firing's activation, row, position and its context window (token ids and
the latent's activations there), copied from the batch only when the firing enters the buffer.
Memory is ``d_sae * m * window`` whatever the number of tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["EMPTY", "RankedBuffer", "Window", "activation_score", "reservoir_score"]

EMPTY = torch.iinfo(torch.int64).min
"""Score of an unused slot (every real score is larger)."""

_M32 = 0xFFFFFFFF


def _mix32(x: Tensor) -> Tensor:
    # A 32-bit integer finaliser (two multiply-xorshift rounds). Inputs and products stay below
    # 2^59, so int64 arithmetic never overflows and CPU and CUDA agree bit for bit.
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    return (x >> 16) ^ x


def activation_score(
    value: Float[Tensor, " n"], token_index: Int[Tensor, " n"]
) -> Int[Tensor, " n"]:
    """Larger for larger ``value`` (> 0), then for the earlier token (index < 2^32)."""
    bits = value.float().contiguous().view(torch.int32).long()  # positive floats: order-preserving
    return (bits << 32) | (_M32 - token_index)


def reservoir_key(
    token_index: Int[Tensor, " n"], latent: Int[Tensor, " n"], seed: int
) -> Int[Tensor, " n"]:
    """A seeded pseudo-random 63-bit key per (token, latent), unique per latent (index < 2^32)."""
    a = _mix32((token_index & _M32) ^ _mix32(torch.full_like(token_index, seed)))
    h = _mix32((a + latent * 0x9E3779B1) & _M32)
    h = _mix32(h ^ ((seed * 0x2545F491) & _M32)) >> 1  # 31 bits
    return (h << 32) | token_index


def reservoir_score(
    token_index: Int[Tensor, " n"], latent: Int[Tensor, " n"], seed: int
) -> Int[Tensor, " n"]:
    """Score for the reservoir: the smallest keys rank first."""
    return -reservoir_key(token_index, latent, seed)


class Window:
    """Context windows for firings of one batch, made on demand for the ones a buffer keeps."""

    def __init__(self, tokens: Tensor, acts: Tensor, before: int, after: int) -> None:
        self.tokens, self.acts = tokens, acts  # [batch, pos], [batch, pos, d_sae]
        self.offsets = torch.arange(-before, after + 1, device=tokens.device)

    def __call__(self, flat: Tensor, latent: Tensor) -> tuple[Tensor, Tensor]:
        """Token ids (-1 outside the row) and activations around flat positions ``flat``."""
        n_pos = self.tokens.shape[1]
        row, pos = flat // n_pos, flat % n_pos
        where = pos[:, None] + self.offsets[None, :]  # [n, window]
        inside = (where >= 0) & (where < n_pos)
        where = where.clamp(0, n_pos - 1)
        tok = self.tokens[row[:, None], where].to(torch.int32).masked_fill(~inside, -1)
        act = self.acts[row[:, None], where, latent[:, None]].float().masked_fill(~inside, 0.0)
        return tok, act


class RankedBuffer:
    """For each of ``d_sae`` latents, the ``m`` firings with the largest scores seen so far.

    ``score`` is kept sorted (descending) per latent, with ``slot`` naming where each entry's
    payload lives; payloads never move: an entrant takes the slot of the entry it pushes out, so
    merging a batch costs work in the number of entrants and touched latents, with no sort of the
    kept entries. Unused slots have score ``EMPTY`` and row -1.
    """

    def __init__(self, d_sae: int, m: int, window: int, device: torch.device | str) -> None:
        self.m = m
        self.score = torch.full((d_sae, m), EMPTY, dtype=torch.int64, device=device)
        self.slot = torch.arange(m, device=device).repeat(d_sae, 1)
        self.value = torch.zeros(d_sae, m, device=device)
        self.row = torch.full((d_sae, m), -1, dtype=torch.int64, device=device)
        self.pos = torch.full((d_sae, m), -1, dtype=torch.int64, device=device)
        self.tokens = torch.full((d_sae, m, window), -1, dtype=torch.int32, device=device)
        self.acts = torch.zeros(d_sae, m, window, device=device)

    def _payload(self) -> list[Tensor]:
        return [self.value, self.row, self.pos, self.tokens, self.acts]

    def offer(
        self,
        latent: Int[Tensor, " n"],
        score: Int[Tensor, " n"],
        value: Float[Tensor, " n"],
        row: Int[Tensor, " n"],
        pos: Int[Tensor, " n"],
        flat: Int[Tensor, " n"],
        window: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    ) -> None:
        """Offer firings (latent, score, ...); ``window(flat, latent)`` makes their contexts."""
        m = self.m
        cand = (score > self.score[latent, -1]).nonzero().squeeze(1)  # only these can enter
        if cand.numel() == 0:
            return
        # candidates by ascending latent, then descending score (two stable sorts, of few)
        cand = cand[torch.sort(score[cand], descending=True, stable=True).indices]
        cand = cand[torch.sort(latent[cand], stable=True).indices]
        lat, sc = latent[cand], score[cand]
        rank = torch.arange(len(cand), device=cand.device) - torch.searchsorted(lat, lat)
        # kept entries that stay above it (none where the latent's buffer is still empty)
        beaten_by = torch.zeros_like(rank)
        busy = (self.score[lat, 0] != EMPTY).nonzero().squeeze(1)
        beaten_by[busy] = (self.score[lat[busy]] > sc[busy, None]).sum(1)
        final = rank + beaten_by  # its place in the merged order
        ok = final < m
        cand, lat, sc, final, beaten_by = cand[ok], lat[ok], sc[ok], final[ok], beaten_by[ok]
        touched = torch.bincount(lat, minlength=self.score.shape[0]).nonzero().squeeze(1)
        where = torch.searchsorted(touched, lat)  # row of each entrant among the touched
        # kept entry i moves down by the number of entrants above it (those it does not beat)
        above = torch.zeros(len(touched), m + 1, dtype=torch.int64, device=cand.device)
        above.index_put_((where, beaten_by), torch.ones_like(where), accumulate=True)
        moved = torch.arange(m, device=cand.device) + above.cumsum(1)[:, :m]
        stays = moved < m
        old_score, old_slot = self.score[touched], self.slot[touched]
        new_score, new_slot = torch.empty_like(old_score), torch.empty_like(old_slot)
        rows = torch.arange(len(touched), device=cand.device)[:, None].expand(-1, m)
        new_score[rows[stays], moved[stays]] = old_score[stays]
        new_slot[rows[stays], moved[stays]] = old_slot[stays]
        # entrants take the freed slots; both lists run by ascending latent, k of each per latent
        freed = old_slot[~stays]
        new_score[where, final] = sc
        new_slot[where, final] = freed
        self.score[touched], self.slot[touched] = new_score, new_slot
        tok, act = window(flat[cand], lat)
        for t, v in zip(self._payload(), (value[cand], row[cand], pos[cand], tok, act),
                        strict=True):  # fmt: skip
            t[lat, freed] = v.to(t.dtype)

    def sorted(self) -> list[Tensor]:
        """Score, value, row, pos, tokens, acts, each latent's entries by descending score."""
        out = [self.score.clone()]
        for t in self._payload():
            index = self.slot.view(*self.slot.shape, *([1] * (t.ndim - 2))).expand_as(t)
            out.append(t.gather(1, index))
        return out
