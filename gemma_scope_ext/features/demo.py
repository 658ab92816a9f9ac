"""The last step of ``gemma-scope demo``: dashboards for the SAE it trained, on held-out text."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gemma_scope_ext.features.build import collect_features
from gemma_scope_ext.features.site import write_dashboard

__all__ = ["write_demo_dashboard"]


def write_demo_dashboard(model: Any, sae: Any, out: str | os.PathLike, n_seqs: int = 200,
                         seq_len: int = 128) -> Path:  # fmt: skip
    """Collect ``sae``'s features over the held-out built-in text, write the site, print its path."""
    from gemma_scope_ext.models.text import sample_tokens

    tokens = sample_tokens(model.tokenizer, n_seqs, seq_len, "eval")
    print(f"\ncollecting feature dashboards over {tokens.numel():,} held-out tokens")
    data = collect_features(model, sae, tokens, names=["demo-res-2"], progress=False)
    index = write_dashboard(data, out)
    alive = int((data[0].fires > 0).sum())
    print(f"{alive} of {data[0].d_sae} latents fired; open {index.resolve().as_uri()}")
    return index
