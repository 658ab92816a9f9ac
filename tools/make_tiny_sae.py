"""Build the small SAE shipped with the embedded tiny Gemma 2 (what the README's quickstart loads).

Trains the demo's recipe (``gemma_scope_ext/cli/demo.py``) with 256 latents on
``blocks.2.hook_resid_post`` and saves it, in SAELens's stock ``jumprelu`` format, to
``gemma_scope_ext/saes/data/tiny_gemma2_res_2/`` (about 260 KB). Run ``make tiny-sae`` (under a minute
on two CPU cores); the result is committed, so users never run this.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[1] / "gemma_scope_ext" / "saes" / "data" / "tiny_gemma2_res_2"


def main() -> None:
    from gemma_scope_ext.cli.demo import train_demo_sae
    from gemma_scope_ext.models.loading import tiny_gemma2

    logging.getLogger("sae_lens").setLevel(logging.ERROR)
    torch.set_num_threads(2)
    train_demo_sae(tiny_gemma2(), training_tokens=200_000, seed=0, output_path=str(OUT),
                   overwrite=True, d_sae=256)  # fmt: skip
    for extra in OUT.iterdir():  # the runner's config and sparsity: not needed to load the SAE
        if extra.name not in ("cfg.json", "sae_weights.safetensors"):
            extra.unlink() if extra.is_file() else shutil.rmtree(extra)
    print(f"wrote {OUT} ({sum(p.stat().st_size for p in OUT.iterdir()):,} bytes)")


if __name__ == "__main__":
    main()
