"""Train a Gemma Scope JumpReLU SAE with SAELens's own runner, offline, on the tiny Gemma 2.

    python tutorials/train_sae.py

Importing ``gemma_scope_ext`` registers the ``gemma_scope_jumprelu`` architecture with SAELens;
``gemma_scope_sae_config`` fills a ``LanguageModelSAERunnerConfig`` with the Gemma Scope recipe
(unit-norm decoder, E||x||^2 = 1 input scaling, bandwidth and initial threshold 0.001, Adam (0, 0.999))
at the hook Gemma Scope used for the site. The saved SAE is in SAELens's stock ``jumprelu`` format.

For gemma-2-2b on a GPU, change the two lines marked (1) and (2) below, drop the shortening
overrides, and give a dataset instead of the built-in docstrings:
    (1) model = load_gemma2("gemma-2-2b", device="cuda")
    (2) cfg = gemma_scope_sae_config("gemma-2-2b", "res", 12, 16384, device="cuda",
                                     dataset_path="monology/pile-uncopyrighted", streaming=True)
"""

import tempfile

import torch
from datasets import Dataset
from sae_lens import SAE, LanguageModelSAETrainingRunner

from gemma_scope_ext import gemma_scope_sae_config, load_gemma2, sample_texts, sample_tokens

torch.manual_seed(0)
model = load_gemma2("tiny-gemma2")  # (1)
with tempfile.TemporaryDirectory(prefix="gemma_scope_sae_") as out_dir:  # removed at the end
    cfg = gemma_scope_sae_config(  # (2)
        "tiny-gemma2", "res", 2, 512,
        # Shortened for a one-minute CPU run; the recipe's defaults are sized for 4B tokens.
        training_tokens=100_000, train_batch_size_tokens=1024, lr=2e-3, lr_warm_up_steps=10,
        l0_warm_up_steps=50, l0_coefficient=2e-3, context_size=128, store_batch_size_prompts=16,
        n_batches_in_buffer=8, output_path=out_dir,
    )  # fmt: skip
    print(f"training on {cfg.hook_name} of {cfg.model_name}: d_in {cfg.sae.d_in}, d_sae {cfg.sae.d_sae}")

    dataset = Dataset.from_dict({"text": sample_texts("train")})
    sae = LanguageModelSAETrainingRunner(cfg, override_model=model, override_dataset=dataset).run()

    # The artifact loads in stock SAELens, with the input scaling folded into the weights.
    stock = SAE.load_from_disk(out_dir)
    tokens = sample_tokens(model.tokenizer, n_seqs=4, seq_len=128, split="eval")
    _, cache = model.run_with_cache(tokens, names_filter=cfg.hook_name)
    x = cache[cfg.hook_name][:, 1:]  # BOS left out, as in training
    with torch.no_grad():
        recon = stock(x)
        l0 = (stock.encode(x) > 0).float().sum(-1).mean().item()
        fvu = ((recon - x).pow(2).sum() / (x - x.mean((0, 1))).pow(2).sum()).item()
        gap = (sae(x) - recon).abs().max().item()
    print(f"saved as {type(stock).__name__} (a temporary folder here): held-out L0 {l0:.1f}, "
          f"FVU {fvu:.3f}")
    assert gap < 1e-4, f"the saved SAE should reproduce the trained one, max difference {gap}"
    assert fvu < 1.0, f"the SAE should explain some variance, FVU {fvu}"
