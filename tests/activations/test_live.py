"""The live forward stops after the deepest hook's block; the mixing buffer's state round-trips."""

from __future__ import annotations

import torch

from gemma_scope_ext.activations import MixingBuffer, activations_of, stop_layer


def test_the_forward_stops_after_the_deepest_block(kind_model, eval_tokens) -> None:
    assert stop_layer(["blocks.0.hook_resid_post", "blocks.2.ln2.hook_normalized"]) == 3
    assert stop_layer(["hook_embed"]) == 0
    ran = []
    handles = [b.register_forward_hook(lambda m, i, o, k=k: ran.append(k))
               for k, b in enumerate(kind_model.blocks)]  # fmt: skip
    try:
        acts = activations_of(kind_model, eval_tokens[:2], ["blocks.1.hook_mlp_out", "hook_embed"],
                              special_ids=[0, 1, 2])  # fmt: skip
        assert ran == [0, 1]
        ran.clear()
        activations_of(kind_model, eval_tokens[:2], ["blocks.2.hook_mlp_out"])
        assert ran == [0, 1, 2]  # control: a deeper hook runs a deeper forward
    finally:
        for h in handles:
            h.remove()
    # Same values as a full forward, special tokens dropped from every hook alike.
    _, cache = kind_model.run_with_cache(eval_tokens[:2])
    keep = ~torch.isin(eval_tokens[:2], torch.tensor([0, 1, 2])).reshape(-1)
    want = torch.cat([cache["blocks.1.hook_mlp_out"].reshape(-1, 128),
                      cache["hook_embed"].reshape(-1, 128)], 1)[keep]  # fmt: skip
    torch.testing.assert_close(acts, want, rtol=1e-5, atol=1e-5)
    assert len(acts) == int(keep.sum()) < eval_tokens[:2].numel()


class Counter:
    """A source of distinct rows: chunk i holds rows 10*i .. 10*i + 9."""

    def __init__(self) -> None:
        self.position = 0

    def next_chunk(self) -> torch.Tensor:
        self.position += 1
        return torch.arange(10 * (self.position - 1), 10 * self.position).float()[:, None]

    def seek(self, position: int) -> None:
        self.position = position


def test_the_mixing_buffer_resumes_exactly_and_serves_every_row_once_per_pass() -> None:
    whole = MixingBuffer(Counter(), 40, 8, 0.5, seed=3)
    served = [whole.next_batch() for _ in range(12)]
    rows = torch.cat(served).flatten()
    assert len(set(rows.tolist())) == len(rows)  # no row twice
    assert not torch.equal(rows, rows.sort().values)  # shuffled
    first = MixingBuffer(Counter(), 40, 8, 0.5, seed=3)
    for _ in range(5):
        first.next_batch()
    state = first.state_dict()
    again = MixingBuffer(Counter(), 40, 8, 0.5, seed=99)
    again.load_state_dict(state)
    assert all(torch.equal(again.next_batch(), served[i]) for i in range(5, 12))
    other = MixingBuffer(Counter(), 40, 8, 0.5, seed=4)  # control: another seed, another order
    assert not torch.equal(torch.cat([other.next_batch() for _ in range(12)]).flatten(), rows)
