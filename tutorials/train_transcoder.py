"""Train a Gemma Scope JumpReLU transcoder on the tiny Gemma 2 with SAELens's runner, then use it.

    python tutorials/train_transcoder.py           # offline, about a minute on a laptop CPU

1. Build the runner config: the Gemma Scope recipe, reading the MLP input after the pre-MLP RMSNorm
   (pre-gain) and predicting the MLP output, at one layer.
2. Train with ``TranscoderTrainingRunner``, called exactly like SAELens's
   ``LanguageModelSAETrainingRunner``; it saves a stock SAELens ``jumprelu_transcoder``.
3. Evaluate with the transcoder spliced in place of the MLP: L0, FVU against the MLP output, and the
   loss increase next to that of zero- and mean-ablating the MLP.
4. Load the saved folder with plain SAELens and splice it with ``HookedSAETransformer``.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import datasets  # noqa: E402
import torch  # noqa: E402
from sae_lens import SAE, HookedSAETransformer  # noqa: E402

from gemma_scope_ext import (  # noqa: E402
    gemma_scope_transcoder_config,
    sample_texts,
    sample_tokens,
    tiny_gemma2,
)
from gemma_scope_ext.training import TranscoderTrainingRunner  # noqa: E402

LAYER = 1
D_SAE = 512
STEPS = 600
BATCH_TOKENS = 512


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="transcoder_") as out_dir:  # removed at the end
        run(out_dir)


def run(out_dir: str) -> None:
    torch.manual_seed(0)
    model = tiny_gemma2()
    dataset = datasets.Dataset.from_dict({"text": sample_texts("train")})

    # 1. The recipe, scaled down: a tiny model trains in a few hundred steps, so the learning rate is
    # higher and the sparsity warm-up shorter than Gemma Scope's 7e-5 and 10,000 steps.
    cfg = gemma_scope_transcoder_config(
        "tiny-gemma2", LAYER, D_SAE,
        context_size=64, training_tokens=STEPS * BATCH_TOKENS,
        train_batch_size_tokens=BATCH_TOKENS, store_batch_size_prompts=32, n_batches_in_buffer=16,
        l0_coefficient=1e-3, l0_warm_up_steps=200, lr=2e-3, lr_warm_up_steps=20,
        output_path=out_dir, n_eval_batches=4, eval_batch_size_prompts=8,
    )  # fmt: skip
    print(f"transcoder: {cfg.hook_name} -> {cfg.hook_name_out}, d_sae {D_SAE}, {STEPS} steps")

    # 2. Train exactly as with LanguageModelSAETrainingRunner.
    runner = TranscoderTrainingRunner(cfg, override_model=model, override_dataset=dataset)
    transcoder = runner.run()

    # 3. Evaluate on held-out text, with the output spliced in at hook_mlp_out.
    tokens = sample_tokens(model.tokenizer, n_seqs=32, seq_len=64, split="eval")
    r = runner.evaluator.evaluate(transcoder, tokens)
    zero, mean = r.zero_ablation_loss - r.clean_loss, r.mean_ablation_loss - r.clean_loss
    print(f"\nheld-out evaluation over {r.n_tokens} tokens (BOS/EOS excluded)")
    print(f"  L0                       {r.l0:8.2f}")
    print(f"  FVU (vs MLP output)      {r.fvu:8.4f}")
    print(f"  clean loss               {r.clean_loss:8.4f} nats")
    print(f"  delta loss, transcoder   {r.delta_loss:+8.4f}")
    print(f"  delta loss, MLP zeroed   {zero:+8.4f}")
    print(f"  delta loss, MLP at mean  {mean:+8.4f}")

    # 4. The saved folder is a stock SAELens transcoder; splice it with HookedSAETransformer.
    loaded = SAE.load_from_disk(out_dir)
    hooked = HookedSAETransformer(model.cfg, tokenizer=model.tokenizer)
    hooked.load_state_dict(model.state_dict())
    with torch.no_grad():
        clean_loss = hooked(tokens, return_type="loss").item()
        spliced_loss = hooked.run_with_saes(tokens, saes=[loaded], return_type="loss").item()
        hooked.add_sae(loaded, use_error_term=True)
        same = torch.allclose(hooked(tokens), model(tokens), atol=1e-4)
    print(f"\nSAELens {type(loaded).__name__} from {out_dir}")
    print(f"  HookedSAETransformer loss, every position spliced: {spliced_loss:.4f} "
          f"(clean {clean_loss:.4f})")
    print(f"  with the error term on, logits equal the clean model's: {same}")


if __name__ == "__main__":
    main()
