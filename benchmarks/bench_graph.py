"""Attribution-graph time and peak memory per prompt, against circuit-tracer 0.5.0 on the same graph.

    python -m benchmarks.bench_graph [--circuit-tracer-python /tmp/ct-venv/bin/python]
                                     [--lengths 16 128 512] [--budget 2048] [--repeats 3]

The tiny Gemma 2 with random JumpReLU transcoders on all four layers (2048 latents, about 24 active
per token and layer); prompts of 16, 128 and 512 tokens (BOS first). Both sides build circuit-
tracer's graph: salient logits (top tokens up to 95%, at most 10), logits before the soft-cap, BOS
features and errors left out, the same feature budget and batch size. Each side runs in its own
process (circuit-tracer in its own virtual environment: it pins transformers <= 4.57.3), with the
same torch thread count; requests alternate between the two (ABAB...) so that drift in the
machine's speed falls on both. Time is the graph call alone (median); peak memory is the rise of
the process's resident set during the call (VmHWM reset before it, malloc returning large blocks
to the system in both processes). CPU seconds (the process's own) are shown beside the wall time:
on a shared machine they measure the work done. The edges of the two graphs are compared on their
shared nodes.
Without ``--circuit-tracer-python`` (or ``CIRCUIT_TRACER_PYTHON``) only this project's side is
measured. circuit-tracer's environment, outside the repository:

    python3 -m venv /tmp/ct-venv && /tmp/ct-venv/bin/pip install circuit-tracer==0.5.0 torch==2.13.0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
D_SAE, L0 = 2048, 24


def _memory_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _transcoders(model, tokens):
    """Random transcoders on every layer, thresholds set for about L0 active latents per token."""
    from sae_lens import JumpReLUTranscoder, JumpReLUTranscoderConfig
    from sae_lens.saes.sae import SAEMetadata

    hooks = [f"blocks.{i}.ln2.hook_normalized" for i in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hooks + [
            f"blocks.{i}.hook_mlp_out" for i in range(model.cfg.n_layers)])
    g = torch.Generator().manual_seed(0)
    out = []
    for layer, hook in enumerate(hooks):
        x, y = cache[hook][0, 1:], cache[f"blocks.{layer}.hook_mlp_out"][0, 1:]
        d = x.shape[-1]
        tc = JumpReLUTranscoder(JumpReLUTranscoderConfig(
            d_in=d, d_sae=D_SAE, d_out=d, apply_b_dec_to_input=False,
            metadata=SAEMetadata(hook_name=hook, hook_name_out=f"blocks.{layer}.hook_mlp_out")))
        with torch.no_grad():
            tc.W_enc.copy_(torch.randn(d, D_SAE, generator=g) / d**0.5)
            tc.W_dec.copy_(torch.randn(D_SAE, d, generator=g) * y.std() / L0**0.5)
            tc.b_enc.zero_()
            tc.b_dec.copy_(y.mean(0))
            pre = x @ tc.W_enc
            tc.threshold.copy_(pre.quantile(1 - L0 / D_SAE, dim=0).clamp_min(1e-3))
        out.append(tc)
    return out


def prepare(folder: Path, lengths: list[int]) -> dict:
    """The model, transcoders and prompts, written for both workers."""
    from safetensors.torch import save_file

    from gemma_scope_ext.models.families import tiny_dir
    from gemma_scope_ext.models.gemma2 import TINY_MODEL_NAME
    from gemma_scope_ext.models.loading import tiny_gemma2
    from gemma_scope_ext.models.text import sample_tokens

    model = tiny_gemma2()
    rows = sample_tokens(model.tokenizer, n_seqs=1, seq_len=max(lengths), split="eval")
    tcs = _transcoders(model, rows)
    cfg = {k: v for k, v in model.cfg.to_dict().items() if k not in ("device", "dtype")}
    (folder / "tl_config.json").write_text(json.dumps(cfg, default=str))
    # Parameters only: buffers (masks, rotary tables) are rebuilt, and differ between TL versions.
    torch.save({n: p.detach() for n, p in model.named_parameters()}, folder / "tl_state.pt")
    save_file({f"{i}.{k}": v.detach().contiguous() for i, tc in enumerate(tcs)
               for k, v in tc.state_dict().items()}, str(folder / "transcoders.safetensors"))
    (folder / "tokenizer.json").write_bytes((tiny_dir(TINY_MODEL_NAME) / "tokenizer.json")
                                            .read_bytes())
    return {n: rows[0, :n].tolist() for n in lengths}


def load_ours(folder: Path):
    from sae_lens import JumpReLUTranscoder, JumpReLUTranscoderConfig
    from sae_lens.saes.sae import SAEMetadata
    from safetensors.torch import load_file

    from gemma_scope_ext.models.loading import tiny_gemma2

    model = tiny_gemma2()
    weights = load_file(str(folder / "transcoders.safetensors"))
    tcs = []
    for layer in range(model.cfg.n_layers):
        w = {k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith(f"{layer}.")}
        d, d_sae = w["W_enc"].shape
        tc = JumpReLUTranscoder(JumpReLUTranscoderConfig(
            d_in=d, d_sae=d_sae, d_out=d, apply_b_dec_to_input=False, metadata=SAEMetadata(
                hook_name=f"blocks.{layer}.ln2.hook_normalized",
                hook_name_out=f"blocks.{layer}.hook_mlp_out")))
        tc.load_state_dict(w)
        tcs.append(tc)
    return model, tcs


def worker(folder: Path) -> None:
    """This project's side: the same protocol as graph_ct_worker.py."""
    from gemma_scope_ext.circuits.graph import feature_graph

    model, tcs = load_ours(folder)
    for line in sys.stdin:
        req = json.loads(line)
        torch.set_num_threads(req["threads"])
        tokens = torch.tensor([req["tokens"]])
        Path("/proc/self/clear_refs").write_text("5")
        before = _memory_kb("VmRSS")
        start, cpu = time.perf_counter(), time.process_time()
        graph = feature_graph(model, tcs, tokens, batch_size=req["batch_size"], progress=False,
                              max_feature_nodes=req["max_feature_nodes"], drop_bos=True,
                              softcap="pre", max_n_logits=req["max_n_logits"],
                              desired_logit_prob=req["desired_logit_prob"])
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        peak = _memory_kb("VmHWM") - before
        start = time.perf_counter()
        graph.prune(0.8, 0.98)
        prune_seconds = time.perf_counter() - start
        if req.get("save"):
            torch.save({"nodes": [list(n) for n in graph.nodes], "weights": graph.weights,
                        "rows": graph.rows}, req["save"])
        print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_mb": peak / 1024,
                          "prune_seconds": prune_seconds,
                          "n_nodes": len(graph.nodes)}), flush=True)


class Worker:
    """A worker process answering one JSON request per line."""

    def __init__(self, argv: list[str]):
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=HERE.parent)

    def __call__(self, req: dict) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {self.proc.args} exited ({self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def compare(ours_path: Path, theirs_path: Path) -> tuple[float, int]:
    """Largest edge difference on shared nodes, relative to the largest edge, and how many."""
    ours, theirs = torch.load(ours_path), torch.load(theirs_path)
    key_ours = []
    for kind, _site, layer, pos, feature, *_ in ours["nodes"]:
        key_ours.append({"feature": ("f", layer, pos, feature), "error": ("e", layer, pos),
                         "embedding": ("t", pos), "logit": ("l", feature)}[kind])
    feats = theirs["active_features"][theirs["selected_features"]].tolist()
    n_layers = 1 + max(f[0] for f in feats) if feats else 0
    n_pos = sum(1 for k in key_ours if k[0] == "t")
    key_theirs = [("f", *f) for f in feats]
    key_theirs += [("e", layer, p) for layer in range(n_layers) for p in range(n_pos)]
    key_theirs += [("t", p) for p in range(n_pos)]
    key_theirs += [("l", t) for t in theirs["logit_tokens"].tolist()]
    index_t = {k: i for i, k in enumerate(key_theirs)}
    shared = [(i, index_t[k]) for i, k in enumerate(key_ours) if k in index_t]
    cols_o = torch.tensor([i for i, _ in shared])
    cols_t = torch.tensor([j for _, j in shared])
    row_of = {int(r): i for i, r in enumerate(ours["rows"])}
    rows = [(row_of[i], j) for i, j in shared if i in row_of]
    a = ours["weights"][torch.tensor([r for r, _ in rows])][:, cols_o]
    b = theirs["adjacency"][torch.tensor([j for _, j in rows])][:, cols_t]
    return float((a - b).abs().max() / b.abs().max()), len(shared)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--circuit-tracer-python", default=os.environ.get("CIRCUIT_TRACER_PYTHON"),
                        help="python of circuit-tracer's own venv (default: $CIRCUIT_TRACER_PYTHON)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 128, 512])
    parser.add_argument("--budget", type=int, default=2048, help="max_feature_nodes on both sides")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", metavar="DATA_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(Path(args.worker))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prompts = prepare(folder, args.lengths)
        sides = {"ours": Worker([sys.executable, "-m", "benchmarks.bench_graph", "--worker",
                                 str(folder)])}
        if args.circuit_tracer_python:
            sides["circuit-tracer"] = Worker([args.circuit_tracer_python,
                                              str(HERE / "graph_ct_worker.py"), str(folder)])
        base = {"batch_size": args.batch_size, "max_feature_nodes": args.budget,
                "max_n_logits": 10, "desired_logit_prob": 0.95, "threads": args.threads}
        for side in sides.values():  # warm-up: first calls pay for lazy initialisation
            side({**base, "tokens": prompts[min(args.lengths)]})
        rows = []
        for n in args.lengths:
            results: dict[str, list[dict]] = {k: [] for k in sides}
            for rep in range(args.repeats):
                for name, side in sides.items():
                    save = str(folder / f"{name}-{n}.pt") if rep == 0 else None
                    results[name].append(side({**base, "tokens": prompts[n], "save": save}))
            agree = (compare(folder / f"ours-{n}.pt", folder / f"circuit-tracer-{n}.pt")
                     if "circuit-tracer" in sides else None)
            rows.append((n, results, agree))
        for side in sides.values():
            side.close()
    _print(rows, args)


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def _print(rows, args) -> None:
    print(f"\ntiny-gemma2, 4 transcoders x {D_SAE} latents (L0 ~{L0} per token and layer), "
          f"feature budget {args.budget}, batch {args.batch_size}, {args.threads} CPU thread(s), "
          f"median of {args.repeats}\n")
    if not args.circuit_tracer_python:
        print("circuit-tracer not measured: pass --circuit-tracer-python or set "
              "CIRCUIT_TRACER_PYTHON to its venv's python\n")
    print("| prompt tokens | active features | graph nodes | ours s (CPU s) | circuit-tracer s "
          "(CPU s) | speed-up (CPU) | ours peak MB | circuit-tracer peak MB | prune ours / ct s "
          "| max edge diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, res, agree in rows:
        o = res["ours"]

        def med(side: list[dict], key: str) -> float:
            return _median([r[key] for r in side])

        t_o, c_o, m_o = med(o, "seconds"), med(o, "cpu_seconds"), med(o, "peak_mb")
        if "circuit-tracer" in res:
            c = res["circuit-tracer"]
            t_c, c_c, m_c = med(c, "seconds"), med(c, "cpu_seconds"), med(c, "peak_mb")
            print(f"| {n} | {c[0]['n_active']:,} | {o[0]['n_nodes']:,} | {t_o:.2f} ({c_o:.2f}) | "
                  f"{t_c:.2f} ({c_c:.2f}) | {t_c / t_o:.2f}x ({c_c / c_o:.2f}x) | {m_o:,.0f} | "
                  f"{m_c:,.0f} | {med(o, 'prune_seconds'):.2f} / {med(c, 'prune_seconds'):.2f} | "
                  f"{agree[0]:.1e} ({agree[1]:,} nodes) |")
        else:
            print(f"| {n} | - | {o[0]['n_nodes']:,} | {t_o:.2f} ({c_o:.2f}) | - | - | {m_o:,.0f} "
                  f"| - | {med(o, 'prune_seconds'):.2f} / - | - |")


if __name__ == "__main__":
    main()
