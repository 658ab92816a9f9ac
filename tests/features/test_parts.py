"""The pass's building blocks on hand-made inputs with hand-computed answers."""

from __future__ import annotations

import torch

from gemma_scope_ext.features.histogram import DoublingHistogram, quantile_edges
from gemma_scope_ext.features.ranked import RankedBuffer, Window, activation_score


def test_histogram_range_doubles_and_merges_bins_exactly():
    h = DoublingHistogram(d_sae=2, n_bins=4, device="cpu")
    h.add(torch.tensor([0, 0, 1]), torch.tensor([0.3, 0.6, 0.1]))
    # latent 0: max 0.6 -> range [0, 1), bins of 0.25: 0.3 -> 1, 0.6 -> 2
    assert h.exponent.tolist()[0] == 0 and h.counts[0].tolist() == [0, 1, 1, 0]
    h.add(torch.tensor([0, 0]), torch.tensor([3.0, 0.9]))
    # range [0, 4): bins of 1.0; the old bins 0-3 merge into bin 0; 3.0 -> 3, 0.9 -> 0
    assert h.exponent.tolist()[0] == 2 and h.counts[0].tolist() == [3, 0, 0, 1]
    # latent 1: max 0.1 -> range [0, 0.125) (0.1 < 2^-3), bins of 1/32: 0.1 -> 3
    assert h.exponent.tolist()[1] == -3 and h.counts[1].tolist() == [0, 0, 0, 1]
    # exactly on an edge: 0.5 of [0, 1) in 4 bins is the first value of bin 2
    e = DoublingHistogram(1, 4, "cpu")
    e.add(torch.tensor([0, 0]), torch.tensor([0.5, 0.75]))
    assert e.counts[0].tolist() == [0, 0, 1, 1]


def test_quantile_edges_by_hand():
    counts = torch.tensor([[4, 0, 2, 2, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1], [0] * 8,
                           [0, 0, 0, 9, 0, 0, 0, 1]])  # fmt: skip
    edges = quantile_edges(counts, n_quantiles=4).tolist()
    # row 0: total 8; >= 2 below at edge 1, >= 4 below at edge 1, >= 6 below at edge 3; top 4
    assert edges[0] == [0, 1, 1, 3, 4]
    assert edges[1] == [0, 2, 4, 6, 8]
    assert edges[2] == [0, 0, 0, 0, 0]  # never fired
    assert edges[3] == [0, 4, 4, 4, 8]  # one bin holds 90%: three quantile bins collapse


def test_ranked_buffer_keeps_the_best_by_score_with_ties_to_the_earlier_token():
    buf = RankedBuffer(d_sae=2, m=2, window=3, device="cpu")
    tokens = torch.tensor([[5, 6, 7, 8]])
    acts = torch.zeros(1, 4, 2)

    def offer(latent, value, flat):
        latent, value, flat = torch.tensor(latent), torch.tensor(value), torch.tensor(flat)
        acts[0, flat, latent] = value
        buf.offer(latent, activation_score(value, flat), value, flat * 0, flat, flat,
                  Window(tokens, acts, 1, 1))  # fmt: skip

    offer([0, 0, 1], [1.0, 3.0, 2.0], [0, 1, 2])
    offer([0, 0, 1], [2.0, 3.0, 2.0], [2, 3, 3])  # latent 0: 3.0 again (later token); 1: a tie
    score, value, row, pos, tok, act = buf.sorted()
    assert value.tolist() == [[3.0, 3.0], [2.0, 2.0]]
    assert pos.tolist() == [[1, 3], [2, 3]]  # the tie goes to the earlier token first
    assert tok[0, 0].tolist() == [5, 6, 7] and tok[0, 1].tolist() == [7, 8, -1]
    assert act[0, 0].tolist() == [1.0, 3.0, 0.0]  # the window as it stood when the token entered
    # a weaker firing does not enter; the slots stay as they were
    offer([0], [0.5], [0])
    assert buf.sorted()[1].tolist() == [[3.0, 3.0], [2.0, 2.0]]
