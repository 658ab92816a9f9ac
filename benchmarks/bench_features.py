"""Feature collection against a clean forward of the same tokens with the SAE spliced, one process.

    python -m benchmarks.bench_features [--d-sae 2048 --l0 64 --n-seqs 64 --threads 1]
    python -m benchmarks.bench_features --device cuda --model gemma-2-2b \\
        --sae gemma-scope-2b-pt-res-canonical:layer_20/width_16k/canonical     # on a GPU

Prints two markdown tables. Time: the spliced forward (``splice``, error term on, logits), the
collection pass (``FeaturePass.step``, what ``collect_features`` runs per batch: forward up to the
SAE's block, encode, every per-latent record), the same forward and encode recording nothing (the
floor), each summed over the batches with the three taking turns batch by batch (so drift in the
shared machine's speed falls on all three), best of ``--repeats`` passes; and the once-per-SAE
finish (output view and token texts). Memory: the
recorder's tensors and the peak resident memory of a fresh process as the tokens grow 16-fold.
Offline the SAE is a random JumpReLU SAE on the tiny model whose threshold gives the asked L0.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch

from gemma_scope_ext.circuits.splice import splice
from gemma_scope_ext.evals.passes import flat
from gemma_scope_ext.features.build import sae_info, to_feature_data
from gemma_scope_ext.features.collect import FeaturePass, collect_latents, stop_layer
from gemma_scope_ext.features.config import FeatureConfig
from gemma_scope_ext.features.output import output_view
from gemma_scope_ext.models.loading import load_model
from gemma_scope_ext.models.text import sample_tokens


def random_sae(model, hook: str, d_sae: int, l0: float, seed: int = 0):
    """A JumpReLU SAE at ``hook`` with one shared threshold set so that its mean L0 is ``l0``."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    g = torch.Generator().manual_seed(seed)
    tokens = sample_tokens(model.tokenizer, 8, 128, "train")
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[hook])
    x = flat(cache[hook])[:, 1:].flatten(0, 1).float().cpu()
    d_in = x.shape[-1]
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(hook_name=hook)))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / x.norm(dim=-1).mean())
        sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=g) / d_in**0.5)
        sae.b_enc.zero_()
        pre = x @ sae.W_enc
        sae.threshold.fill_(float(pre.flatten().kthvalue(int(pre.numel() * (1 - l0 / d_sae))).values))
    return sae.to(model.cfg.device)


def time_interleaved(model, sae, batches, cfg, repeats: int) -> dict[str, float]:
    """Seconds over all batches of each run, the runs taking turns batch by batch (ABCABC...),
    best of ``repeats`` passes; the collection pass keeps its state across the batches."""
    hook = sae.cfg.metadata.hook_name
    stop = stop_layer(model, [hook])
    names = ("forward with the SAE spliced (logits)", "collection pass (FeaturePass.step)",
             "forward to the site + encode, nothing recorded")  # fmt: skip
    best = dict.fromkeys(names, float("inf"))
    def floor(b):
        _, cache = model.run_with_cache(b, names_filter=[hook], stop_at_layer=stop)
        sae.encode(flat(cache[hook]))

    def finish(rec):
        info = sae_info(model, sae)
        view = output_view(model, sae, info.hook_name_out, cfg.n_logits)._asdict()
        to_feature_data(rec, info, view, model.tokenizer)

    last = "finish per SAE (output view, token texts)"
    best[last] = float("inf")
    for _ in range(repeats):
        spent = dict.fromkeys(names, 0.0)
        with FeaturePass(model, [sae], cfg) as run:
            for b in batches:
                with splice(model, [sae]):
                    spent[names[0]] += _timed(model, b, return_type="logits")
                spent[names[1]] += _timed(run.step, b)
                spent[names[2]] += _timed(floor, b)
        for k in names:
            best[k] = min(best[k], spent[k])
        best[last] = min(best[last], _timed(finish, run.recorders[0]))
    return best


def _timed(fn, *args, **kwargs) -> float:
    _sync()
    start = time.perf_counter()
    fn(*args, **kwargs)
    _sync()
    return time.perf_counter() - start


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _memory_worker(args: argparse.Namespace) -> None:
    """In a fresh process: stream ``repeats`` copies of the tokens; print state bytes, peak RSS."""
    model, sae, tokens = _setup(args)
    cfg = FeatureConfig()

    def stream():
        for _ in range(args.memory_worker):
            yield from tokens.split(args.batch_size)

    rec = collect_latents(model, [sae], stream(), cfg, progress=False)[0]
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if str(model.cfg.device).startswith("cuda"):  # the state lives in GPU memory: that peak
        peak_kib = torch.cuda.max_memory_allocated() // 1024
    print(rec.n_tokens, rec.state_bytes(), peak_kib)


def _setup(args: argparse.Namespace):
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    model = load_model(args.model, device=args.device)
    if args.sae:
        from gemma_scope_ext.cli.eval import load_sae

        sae = load_sae(args.sae, str(model.cfg.device))[1]
    else:
        sae = random_sae(model, args.hook, args.d_sae, args.l0)
    tokens = sample_tokens(model.tokenizer, args.n_seqs, args.seq_len, "train")
    return model, sae, tokens


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-gemma2")
    p.add_argument("--sae", default=None, help="FOLDER or RELEASE:SAE_ID (default: random)")
    p.add_argument("--hook", default="blocks.2.hook_resid_post", help="hook of the random SAE")
    p.add_argument("--d-sae", type=int, default=2048, help="latents of the random SAE")
    p.add_argument("--l0", type=float, default=64, help="mean L0 of the random SAE")
    p.add_argument("--n-seqs", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--memory-worker", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_worker:
        return _memory_worker(args)
    model, sae, tokens = _setup(args)
    batches = list(tokens.to(model.cfg.device).split(args.batch_size))
    hook, cfg = sae.cfg.metadata.hook_name, FeatureConfig()
    feats = (sae.encode(flat(model.run_with_cache(batches[0], names_filter=[hook])[1][hook]))
             > 0).float().sum(-1)[:, 1:].mean()  # fmt: skip
    with splice(model, [sae]):  # warm-up
        for b in batches:
            model(b, return_type="logits")
    seconds = time_interleaved(model, sae, batches, cfg, args.repeats)
    base = seconds["forward with the SAE spliced (logits)"]
    n_tokens = tokens.numel()
    device = str(model.cfg.device)
    print(f"{args.model}, {hook}, d_sae {sae.cfg.d_sae}, L0 {float(feats):.0f}, {args.n_seqs} x "
          f"{args.seq_len} tokens, batch {args.batch_size}, {device}, {torch.get_num_threads()} "
          f"CPU thread(s), best of {args.repeats}, interleaved batch by batch\n")  # fmt: skip
    print("| run | seconds | tokens/s | x spliced forward |")
    print("|---|---:|---:|---:|")
    for name, s in seconds.items():
        rate = "-" if name.startswith("finish") else f"{n_tokens / s:,.0f}"  # once per SAE
        print(f"| {name} | {s:.3f} | {rate} | {s / base:.2f} |")
    cuda = device.startswith("cuda")
    where = "peak GPU memory allocated" if cuda else "peak RSS of the process"
    print(f"\n| tokens streamed | recorder tensors (MiB) | {where} (MiB) |")
    print("|---:|---:|---:|")
    forwarded = [a for a in sys.argv[1:] if a != "--memory-worker"] if argv is None else argv
    for repeats in (1, 4, 16):
        # 64 rows repeated: the last occurrence of --n-seqs wins
        done = subprocess.run([sys.executable, "-m", "benchmarks.bench_features", *forwarded,
                               "--n-seqs", str(min(64, args.n_seqs)), "--memory-worker",
                               str(repeats)], capture_output=True, text=True, check=True)  # fmt: skip
        n, state, peak = done.stdout.split()[-3:]
        print(f"| {int(n):,} | {int(state) / 2**20:.1f} | {int(peak) / 1024:.0f} |")


if __name__ == "__main__":
    main()
