"""Attribution graphs at Gemma 2 2B scale on a GPU: time and peak GPU memory per prompt.

    python -m benchmarks.gemma_scale_graph --device cuda [--lengths 128 512] [--budget 8192]
    python -m benchmarks.gemma_scale_graph --smoke      # the same code path, small, on CPU

No weights can be downloaded where this runs, so the model is Gemma 2 2B's architecture with random
weights (TransformerLens's own gemma-2-2b config) and 26 random JumpReLU transcoders of 16,384
latents with thresholds set for about 70 active per token and layer, as Gemma Scope's are; prompts
are random token ids after BOS. The timing and memory depend on the shapes and the sparsity, not
on the weights' values. Only this project's side runs: circuit-tracer cannot be installed on a
machine without a network (compare on the tiny model with ``bench_graph``).
"""

from __future__ import annotations

import argparse
import time

import torch


def _model(device: str, smoke: bool):
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import convert_hf_model_config

    cfg = convert_hf_model_config("google/gemma-2-2b")
    if smoke:
        cfg.update(d_model=256, n_layers=2, d_mlp=512, d_vocab=4096, n_heads=4, d_head=32,
                   n_key_value_heads=2, attn_types=["local", "global"])
    cfg.update(device=device, dtype=torch.float32, tokenizer_name=None, n_ctx=1024)
    torch.manual_seed(0)
    return HookedTransformer(HookedTransformerConfig(**cfg)).eval()


def _transcoders(model, d_sae: int, l0: int, device: str):
    from sae_lens import JumpReLUTranscoder, JumpReLUTranscoderConfig
    from sae_lens.saes.sae import SAEMetadata

    d = model.cfg.d_model
    g = torch.Generator(device=device).manual_seed(1)
    out = []
    for layer in range(model.cfg.n_layers):
        tc = JumpReLUTranscoder(JumpReLUTranscoderConfig(
            d_in=d, d_sae=d_sae, d_out=d, apply_b_dec_to_input=False, device=device,
            metadata=SAEMetadata(hook_name=f"blocks.{layer}.ln2.hook_normalized",
                                 hook_name_out=f"blocks.{layer}.hook_mlp_out")))
        with torch.no_grad():
            tc.W_enc.copy_(torch.randn(d, d_sae, generator=g, device=device))
            tc.W_dec.copy_(torch.randn(d_sae, d, generator=g, device=device) / d_sae**0.5)
            # Inputs are x / rms(x): unit variance per coordinate, so pre-activations ~ N(0, d).
            tc.threshold.fill_(float(torch.distributions.Normal(0, d**0.5).icdf(
                torch.tensor(1 - l0 / d_sae))))
            tc.b_enc.zero_()
            tc.b_dec.zero_()
        out.append(tc)
    return out


def main(argv: list[str] | None = None) -> None:
    from gemma_scope_ext.circuits.graph import feature_graph

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--budget", type=int, default=8192, help="max_feature_nodes")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="small shapes on CPU")
    args = parser.parse_args(argv)
    device = "cpu" if args.smoke else args.device
    d_sae, l0 = (1024, 16) if args.smoke else (16384, 70)
    lengths = [16, 32] if args.smoke else args.lengths
    budget = 256 if args.smoke else args.budget
    model = _model(device, args.smoke)
    tcs = _transcoders(model, d_sae, l0, device)
    cuda = device.startswith("cuda")
    rows = []
    for n in lengths:
        g = torch.Generator().manual_seed(n)
        tokens = torch.randint(4, model.cfg.d_vocab, (1, n), generator=g)
        tokens[0, 0] = 2  # BOS
        tokens = tokens.to(device)
        times, peaks = [], []
        for _ in range(args.repeats + 1):  # the first call warms up
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            start = time.perf_counter()
            graph = feature_graph(model, tcs, tokens, batch_size=args.batch_size, progress=False,
                                  max_feature_nodes=budget, drop_bos=True)
            if cuda:
                torch.cuda.synchronize()
                peaks.append((torch.cuda.max_memory_allocated() - base) / 2**20)
            times.append(time.perf_counter() - start)
        n_feat = sum(node.kind == "feature" for node in graph.nodes)
        rows.append((n, n_feat, len(graph.nodes), sorted(times[1:])[len(times[1:]) // 2],
                     max(peaks[1:]) if peaks else float("nan")))
        del graph
    name = torch.cuda.get_device_name() if cuda else "CPU"
    shapes = "small smoke-test shapes" if args.smoke else "gemma-2-2b shapes"
    print(f"\n{name}; {shapes} (random weights), {model.cfg.n_layers} transcoders x "
          f"{d_sae} latents (L0 ~{l0}), feature budget {budget}, batch {args.batch_size}\n")
    print("| prompt tokens | attributed features | nodes | seconds | peak GPU MB |")
    print("|---:|---:|---:|---:|---:|")
    for n, n_feat, n_nodes, sec, peak in rows:
        print(f"| {n} | {n_feat:,} | {n_nodes:,} | {sec:.2f} | {peak:,.0f} |")


if __name__ == "__main__":
    main()
