"""The small SAE shipped with the embedded tiny Gemma 2, so that examples run offline."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

__all__ = ["TINY_SAE_HOOK", "tiny_sae"]

TINY_SAE_HOOK = "blocks.2.hook_resid_post"
"""The hook the shipped tiny SAE reads and replaces."""


def tiny_sae(device: str = "cpu") -> Any:
    """A 256-latent JumpReLU SAE on ``blocks.2.hook_resid_post`` of ``tiny_gemma2()``.

    Trained with the Gemma Scope recipe by ``tools/make_tiny_sae.py`` (shortened for a run of 200k
    tokens) and stored in SAELens's stock ``jumprelu`` format; loaded with ``SAE.load_from_disk``.
    """
    from sae_lens import SAE

    folder = files("gemma_scope_ext.saes") / "data" / "tiny_gemma2_res_2"
    return SAE.load_from_disk(str(folder), device=device)
