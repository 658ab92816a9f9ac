"""Token sources: the streamed packing equals the built-in packing; token files; clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gemma_scope_ext.features.source import pack_rows, token_stream
from gemma_scope_ext.models.text import sample_texts, sample_tokens


def test_streamed_packing_equals_sample_tokens(tiny_model):
    tok = tiny_model.tokenizer
    want = sample_tokens(tok, 7, 40, "eval")
    got = torch.cat(list(pack_rows(tok, iter(sample_texts("eval")), 40, 7, batch_size=3)))
    assert torch.equal(got, want)
    assert [len(b) for b in pack_rows(tok, iter(sample_texts("eval")), 40, 7, 3)] == [3, 3, 1]
    with pytest.raises(ValueError, match="ran out"):
        list(pack_rows(tok, iter(["a short text"]), 40, 7, 3))


def test_builtin_and_token_file_streams(tiny_model, tmp_path):
    tok = tiny_model.tokenizer
    stream = token_stream("docstrings", tok, n_tokens=100, seq_len=32, batch_size=2)
    assert stream.n_rows == 4  # whole rows: ceil(100 / 32)
    assert torch.equal(torch.cat(list(stream.batches)), sample_tokens(tok, 4, 32, "eval"))
    rows = np.arange(60, dtype=np.int32).reshape(6, 10)
    np.save(tmp_path / "t.npy", rows)
    stream = token_stream(str(tmp_path / "t.npy"), tok, n_tokens=35, seq_len=999, batch_size=3)
    assert stream.n_rows == 4  # the file's own rows of 10
    assert torch.equal(torch.cat(list(stream.batches)), torch.from_numpy(rows[:4]).long())
    with pytest.raises(ValueError, match="fewer"):
        token_stream(str(tmp_path / "t.npy"), tok, n_tokens=61, seq_len=10, batch_size=3)
    np.save(tmp_path / "f.npy", rows.astype(np.float32))
    with pytest.raises(ValueError, match="integer"):
        token_stream(str(tmp_path / "f.npy"), tok, n_tokens=10, seq_len=10, batch_size=3)
    with pytest.raises(ValueError, match="fewer"):
        token_stream("docstrings", tok, n_tokens=10**7, seq_len=128, batch_size=8)


def test_a_hub_dataset_offline_says_what_to_use_instead(tiny_model):
    with pytest.raises(RuntimeError, match="Offline, use docstrings or a token file"):
        token_stream("someone/no-such-dataset", tiny_model.tokenizer, 100, 32, 2)
