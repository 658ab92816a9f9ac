"""``gemma-scope demo``: train a Gemma Scope JumpReLU SAE on an embedded tiny model, offline.

The tiny Gemma 2 by default, the tiny Gemma 3 with ``--model tiny-gemma3``. Trains on the residual stream after block 2 with SAELens's own runner and the Gemma Scope recipe
(shortened: a larger learning rate and shorter warm-ups for a one-minute run), then reports L0,
FVU and delta loss on held-out text and the strongest latents on each token of a prompt. The SAE is
saved to a folder (``--out``) and the demo ends with the commands that evaluate it and draw its
feature dashboards.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import warnings
from functools import partialmethod
from pathlib import Path

import torch

LAYER = 2
D_SAE = 1024
DEFAULT_MODEL = "tiny-gemma2"
FAMILY_NAMES = {"gemma2": "Gemma 2", "gemma3": "Gemma 3"}


@contextlib.contextmanager
def _progress_every_step():
    """SAELens's training bar moves every 100 steps; here, every step (a run has a few hundred)."""
    from sae_lens.training.sae_trainer import SAETrainer

    original = SAETrainer._update_pbar
    SAETrainer._update_pbar = partialmethod(original, update_interval=1)  # type: ignore[method-assign]
    try:
        yield
    finally:
        SAETrainer._update_pbar = original  # type: ignore[method-assign]


def train_demo_sae(model, training_tokens: int = 200_000, seed: int = 0,
                   output_path: str | None = None, overwrite: bool = False, d_sae: int = D_SAE,
                   model_name: str = DEFAULT_MODEL):  # fmt: skip
    """A JumpReLU SAE on ``blocks.{LAYER}.hook_resid_post`` of ``model`` (the embedded tiny model
    called ``model_name``), trained offline and saved to ``output_path`` (if given)."""
    from datasets import Dataset
    from sae_lens import LanguageModelSAETrainingRunner

    from gemma_scope_ext.models.text import sample_texts
    from gemma_scope_ext.training.runner_config import gemma_scope_sae_config

    torch.manual_seed(seed)
    cfg = gemma_scope_sae_config(
        model_name, "res", LAYER, d_sae,
        # The recipe's lr (7e-5) and warm-ups (1k and 10k steps) are sized for billions of
        # tokens; this run has a few hundred steps.
        training_tokens=training_tokens, train_batch_size_tokens=1024, lr=2e-3,
        lr_warm_up_steps=20, l0_warm_up_steps=100, l0_coefficient=2e-3,
        context_size=128, store_batch_size_prompts=16, n_batches_in_buffer=8,
        output_path=output_path, overwrite=overwrite, checkpoint_path=None, seed=seed,
    )  # fmt: skip
    dataset = Dataset.from_dict({"text": sample_texts("train")})
    runner = LanguageModelSAETrainingRunner(cfg, override_model=model, override_dataset=dataset)
    with _progress_every_step():
        return runner.run()


def next_commands(sae_dir: str | Path, out_root: str | Path, model_name: str = DEFAULT_MODEL
                  ) -> list[str]:  # fmt: skip
    """The commands to try next on the saved SAE, as a shell would take them."""
    sae, root = shlex.quote(str(sae_dir)), Path(out_root)
    model = "" if model_name == DEFAULT_MODEL else f" --model {shlex.quote(model_name)}"
    return [
        f"gemma-scope eval{model} --sae {sae} --out {shlex.quote(str(root / 'eval'))}",
        f"gemma-scope features{model} --sae {sae} --out {shlex.quote(str(root / 'features'))}",
    ]


def _print_top_latents(model, sae, prompt: str, k: int = 3) -> None:
    tokens = model.to_tokens(prompt)
    _, cache = model.run_with_cache(tokens, names_filter=sae.cfg.metadata.hook_name)
    acts = sae.encode(cache[sae.cfg.metadata.hook_name][0])  # [pos, d_sae]
    print(f"\nstrongest latents per token of {prompt!r} (latent:activation):")
    for pos in range(1, tokens.shape[1]):  # BOS left out: the SAE never trained on it
        top = acts[pos].topk(k)
        token = model.tokenizer.decode(tokens[0, pos])
        pairs = zip(top.values.tolist(), top.indices.tolist(), strict=True)
        shown = "  ".join(f"{i:>4}:{v:5.2f}" for v, i in pairs if v > 0)
        print(f"  {token!r:>14}  {shown or '(no active latent)'}")


def main(args: argparse.Namespace) -> int:
    from gemma_scope_ext.evals.metrics import evaluate
    from gemma_scope_ext.models.families import get_spec, tiny_model_names
    from gemma_scope_ext.models.loading import tiny_model
    from gemma_scope_ext.models.text import sample_tokens

    # SAELens warns that the override model/dataset make the run irreproducible from its config
    # alone, and that the dataset is not pre-tokenised; both are deliberate here.
    logging.getLogger("sae_lens").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="sae_lens")
    from gemma_scope_ext.training.checks import check_output_folder

    n_tokens = getattr(args, "tokens", 300_000)  # absent when called without the CLI parser
    model_name = getattr(args, "model", DEFAULT_MODEL)
    if model_name not in tiny_model_names():
        raise ValueError(f"the demo runs offline on an embedded tiny model; got {model_name!r}, "
                         f"expected one of: {', '.join(tiny_model_names())}")
    sae_dir = Path(getattr(args, "out", "gemma_scope_demo/sae"))
    overwrite = bool(getattr(args, "overwrite", False))
    features_out = getattr(args, "features_out", None) or str(sae_dir.parent / "features")
    check_output_folder(sae_dir, overwrite, "--out folder")  # before any training
    if sae_dir.is_dir() and overwrite:
        print(f"replacing the SAE saved in {sae_dir} (--overwrite)")
    model = tiny_model(model_name)
    family = FAMILY_NAMES.get(get_spec(model_name).family, get_spec(model_name).family)
    print(f"training a {D_SAE}-latent JumpReLU SAE on blocks.{LAYER}.hook_resid_post of the tiny "
          f"{family} ({n_tokens:,} tokens, Gemma Scope recipe)")  # fmt: skip
    sae = train_demo_sae(model, training_tokens=n_tokens, output_path=str(sae_dir),
                         overwrite=overwrite, model_name=model_name)  # fmt: skip
    print(f"saved the SAE to {sae_dir.resolve()}")
    sae.eval()
    tokens = sample_tokens(model.tokenizer, n_seqs=16, seq_len=128, split="eval")
    with torch.no_grad():
        result = evaluate(model, sae, tokens, progress=False)
        print(f"\nheld-out ({result.n_tokens} tokens, BOS excluded): L0 {result.l0:.1f}  "
              f"FVU {result.fvu:.3f}  delta loss {result.delta_loss:+.3f} nats "
              f"(clean {result.clean_loss:.3f})")  # fmt: skip
        print(f"for scale, replacing the residual stream there costs: zero-ablation "
              f"{result.zero_ablation_loss - result.clean_loss:+.3f}, mean-ablation "
              f"{result.mean_ablation_loss - result.clean_loss:+.3f} nats; the SAE recovers "
              f"{result.loss_recovered:.1%} of the zero-ablation loss")  # fmt: skip
        _print_top_latents(model, sae, args.prompt)
        from gemma_scope_ext.features.build import feature_dashboards

        tokens = sample_tokens(model.tokenizer, n_seqs=200, seq_len=128, split="eval")
        data, index = feature_dashboards(model, sae, tokens, features_out, names=["demo-res-2"],
                                         progress=False)  # fmt: skip
        print(f"\nfeature dashboards of its latents ({int((data[0].fires > 0).sum())} of {D_SAE} "
              f"fired on {data[0].n_tokens:,} held-out tokens): open {index.resolve().as_uri()}")
    print("\nnext, on the saved SAE:")
    for command in next_commands(sae_dir, sae_dir.parent, model_name):
        print(f"  {command}")
    return 0
