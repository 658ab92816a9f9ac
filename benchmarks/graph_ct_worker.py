"""circuit-tracer's side of ``bench_graph``: run in circuit-tracer's own virtual environment.

    /tmp/ct-venv/bin/python benchmarks/graph_ct_worker.py DATA_DIR

circuit-tracer 0.5.0 pins transformers <= 4.57.3 and huggingface-hub < 1, so it cannot share this
project's environment; ``bench_graph`` starts this script with that environment's Python and sends
it one JSON request per line on stdin. DATA_DIR (written by ``bench_graph``) holds the tiny Gemma 2
as TransformerLens weights and config, the transcoders as SAELens-layout tensors, and the tokenizer
file. This script imports only torch, transformer_lens, transformers and circuit_tracer's public
API; it uses nothing from this project.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch


def _memory_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def load(data: Path):
    from circuit_tracer.replacement_model.replacement_model_transformerlens import (
        TransformerLensReplacementModel,
    )
    from circuit_tracer.transcoder.activation_functions import JumpReLU
    from circuit_tracer.transcoder.single_layer_transcoder import (
        SingleLayerTranscoder,
        TranscoderSet,
    )
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformerConfig
    from transformers import PreTrainedTokenizerFast

    raw = json.loads((data / "tl_config.json").read_text())
    known = {f.name for f in dataclasses.fields(HookedTransformerConfig)}
    cfg = HookedTransformerConfig(**{k: v for k, v in raw.items() if k in known and k != "dtype"},
                                  dtype=torch.float32)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(data / "tokenizer.json"), bos_token="<bos>", eos_token="<eos>",
        pad_token="<pad>", unk_token="<unk>")
    model = TransformerLensReplacementModel(cfg, move_to_device=False)
    # Set directly: TransformerLens would re-open the tokenizer by name, which 4.57 cannot.
    model.tokenizer = tokenizer
    state = torch.load(data / "tl_state.pt", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    params = {n for n, _ in model.named_parameters()}
    if params & set(missing) or unexpected:
        raise RuntimeError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    weights = load_file(str(data / "transcoders.safetensors"))
    transcoders = {}
    for layer in range(cfg.n_layers):
        w = {k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith(f"{layer}.")}
        tc = SingleLayerTranscoder(cfg.d_model, w["W_enc"].shape[1], JumpReLU(w["threshold"]),
                                   layer, device=torch.device("cpu"), dtype=torch.float32)
        with torch.no_grad():
            tc.W_enc.copy_(w["W_enc"].T)  # circuit-tracer stores [d_transcoder, d_model]
            tc.W_dec.copy_(w["W_dec"])
            tc.b_enc.copy_(w["b_enc"])
            tc.b_dec.copy_(w["b_dec"])
        transcoders[layer] = tc
    tset = TranscoderSet(transcoders, feature_input_hook="ln2.hook_normalized",
                         feature_output_hook="hook_mlp_out", scan="bench")
    model._configure_replacement_model(tset)
    return model.eval()


def main() -> None:
    from circuit_tracer import attribute
    from circuit_tracer.graph import prune_graph

    data = Path(sys.argv[1])
    model = load(data)
    for line in sys.stdin:
        req = json.loads(line)
        torch.set_num_threads(req["threads"])
        tokens = torch.tensor(req["tokens"])
        _reset_peak()
        before = _memory_kb("VmRSS")
        start, cpu = time.perf_counter(), time.process_time()
        graph = attribute(tokens, model, batch_size=req["batch_size"],
                          max_feature_nodes=req["max_feature_nodes"],
                          max_n_logits=req["max_n_logits"],
                          desired_logit_prob=req["desired_logit_prob"])
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        peak = _memory_kb("VmHWM") - before
        start = time.perf_counter()
        prune_graph(graph, 0.8, 0.98)
        prune_seconds = time.perf_counter() - start
        if req.get("save"):
            torch.save({"adjacency": graph.adjacency_matrix,
                        "active_features": graph.active_features,
                        "selected_features": graph.selected_features,
                        "logit_tokens": graph.logit_token_ids,
                        "logit_probabilities": graph.logit_probabilities}, req["save"])
        print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_mb": peak / 1024,
                          "prune_seconds": prune_seconds,
                          "n_active": int(graph.active_features.shape[0]),
                          "n_nodes": int(graph.adjacency_matrix.shape[0])}), flush=True)


if __name__ == "__main__":
    main()
