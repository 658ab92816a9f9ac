"""Circuits on the tiny Gemma 2: which transcoder features drive a prediction, and how.

Runs offline in well under a minute:

    .venv/bin/python tutorials/circuits.py

1. Fit small JumpReLU transcoders on every layer (a few hundred Adam steps on cached activations).
2. Rank every feature and error node by attribution patching for a logit difference.
3. Check the linear estimates against true ablations.
4. Build the attribution graph (frozen attention and norms) for the metric and for the model's most
   probable next tokens, prune them as circuit-tracer does, score them, save circuit-tracer's graph
   JSON and a self-contained HTML view.
5. Steer the prediction with the top feature, and clamp it off.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from sae_lens import JumpReLUTranscoder, JumpReLUTranscoderConfig
from sae_lens.saes.sae import SAEMetadata
from tqdm.auto import trange

from gemma_scope_ext import (
    FeatureGraph,
    ablate,
    attribution_patching,
    clamp,
    feature_graph,
    hook_name,
    hook_name_out,
    logit_diff,
    sample_tokens,
    steer,
    tiny_gemma2,
)


def fit_transcoder(x, y, layer, model, d_sae=128, steps=200, l1=3e-3, seed=0):
    """A quick transcoder: ReLU features with an L1 penalty, stored as a JumpReLU transcoder with
    threshold 0 (the same function). Real Gemma Scope transcoders come from the loader."""
    torch.manual_seed(seed)
    d_in, d_out = x.shape[-1], y.shape[-1]
    w_enc = torch.nn.Parameter(torch.randn(d_in, d_sae) / d_in**0.5)
    w_dec = torch.nn.Parameter(torch.randn(d_sae, d_out) * y.std() / d_sae**0.5)
    b_enc = torch.nn.Parameter(torch.zeros(d_sae))
    b_dec = torch.nn.Parameter(y.mean(0).clone())
    opt = torch.optim.Adam([w_enc, w_dec, b_enc, b_dec], lr=3e-3)
    scale = y.pow(2).sum(-1).mean()  # so the loss is a fraction of the output's energy
    for _ in range(steps):
        f = torch.relu(x @ w_enc + b_enc)
        mse = (f @ w_dec + b_dec - y).pow(2).sum(-1).mean() / scale
        loss = mse + l1 * (f * w_dec.norm(dim=1)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    cfg = JumpReLUTranscoderConfig(
        d_in=d_in, d_sae=d_sae, d_out=d_out, apply_b_dec_to_input=False,
        metadata=SAEMetadata(hook_name=hook_name(model, "transcoder", layer),
                             hook_name_out=hook_name_out(model, "transcoder", layer)))
    tc = JumpReLUTranscoder(cfg)
    with torch.no_grad():
        for name, p in [("W_enc", w_enc), ("W_dec", w_dec), ("b_enc", b_enc), ("b_dec", b_dec)]:
            getattr(tc, name).copy_(p)
        tc.threshold.zero_()
    return tc, float(mse.detach())


def main() -> None:
    torch.manual_seed(0)
    model = tiny_gemma2()
    n_layers = model.cfg.n_layers

    # 1. Transcoders from cached MLP inputs (pre-gain RMSNorm output) and MLP outputs.
    train = sample_tokens(model.tokenizer, n_seqs=8, seq_len=48, split="train")
    names = [hook_name(model, "transcoder", i) for i in range(n_layers)]
    names += [hook_name_out(model, "transcoder", i) for i in range(n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(train, names_filter=names)
    transcoders = []
    for layer in trange(n_layers, desc="fitting transcoders"):
        x = cache[names[layer]][:, 1:].reshape(-1, model.cfg.d_model)  # BOS excluded
        y = cache[names[n_layers + layer]][:, 1:].reshape(-1, model.cfg.d_model)
        tc, fvu = fit_transcoder(x, y, layer, model, seed=layer)
        transcoders.append(tc)
        print(f"layer {layer}: fraction of MLP output energy unexplained {fvu:.3f}")

    # 2. A prompt and a metric: the model's top next-token logit minus its runner-up's.
    tokens = sample_tokens(model.tokenizer, n_seqs=1, seq_len=14, split="eval")
    pos = tokens.shape[1] - 1
    with torch.no_grad():
        top2 = model(tokens)[0, pos].topk(2).indices.tolist()
    metric = logit_diff(pos, top2[0], top2[1])
    words = model.to_str_tokens(tokens[0])
    print(f"\nprompt: {''.join(words[1:])!r}")
    print(f"metric: logit[{model.to_string([top2[0]])!r}] - logit[{model.to_string([top2[1]])!r}]")
    table = attribution_patching(model, transcoders, tokens, metric)
    print(table.format(8))

    # 3. Linear estimate vs. the true effect of zeroing each of the top features.
    top = table.features()[:6]
    effects = [ablate(model, transcoders, tokens, metric, [r]).effect for r in top]
    print("\nfeature                estimate   true effect")
    for r, e in zip(top, effects, strict=True):
        print(f"transcoder.{r.layer}@{r.position}#{r.feature:<5} {r.attribution:>10.4f} {e:>12.4f}")
    est = torch.tensor([r.attribution for r in top])
    print(f"correlation: {torch.corrcoef(torch.stack([est, torch.tensor(effects)]))[0, 1]:.3f}")

    # 4. The attribution graph for the metric, pruned to the nodes carrying 80% of its influence.
    graph = feature_graph(model, transcoders, tokens, metric, batch_size=64)
    pruned = graph.prune(node_threshold=0.8, edge_threshold=0.95)
    print(f"\ngraph: {len(graph.nodes)} nodes -> {len(pruned.nodes)} after pruning; "
          f"{len(graph.edges())} edges -> {len(pruned.edges())}")
    into_metric = [e for e in pruned.edges() if e.target == len(pruned.nodes) - 1]
    print("strongest direct effects on the metric:")
    for e in into_metric[:6]:
        print(f"  {pruned.nodes[e.source].id:>22} -> {pruned.nodes[e.target].id:<22} {e.weight:+.3f}")
    # Without a metric the targets are circuit-tracer's: the most probable next tokens up to 95%
    # (at most 10), weighted by probability, read before the final soft-cap. A feature budget
    # attributes the most influential features first.
    logits_graph = feature_graph(model, transcoders, tokens, max_feature_nodes=400, drop_bos=True)
    targets = [n for n in logits_graph.nodes if n.is_target]
    print("logit targets: " + ", ".join(f"{n.label!r} p={n.weight:.2f}" for n in targets))
    scores = logits_graph.scores()
    print(f"replacement score {scores.replacement:.3f}, completeness {scores.completeness:.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        small = logits_graph.prune()
        path = small.to_json(Path(tmp) / "graph.json")  # circuit-tracer's viewer opens this
        assert FeatureGraph.from_json(path).nodes == small.nodes
        page = small.to_html(Path(tmp) / "graph.html")  # open in a browser, offline
        print(f"saved {path.name} ({path.stat().st_size} bytes) and {page.name}")

    # 5. Steering: push the top feature's decoder direction at the prediction position.
    best = next(r for r in table.features() if r.attribution > 0)
    tc = transcoders[best.layer]
    torch.set_grad_enabled(False)
    clean = float(metric(model(tokens)))
    for coefficient in (2.0, -2.0):
        with steer(model, tc, best.feature, coefficient, positions=[pos]):
            print(f"steer {coefficient:+.0f} x feature {best.feature}: metric {clean:.3f} -> "
                  f"{float(metric(model(tokens))):.3f}")
    with clamp(model, tc, best.feature, 0.0, positions=[best.position]):
        print(f"clamp feature {best.feature} to 0: metric {clean:.3f} -> "
              f"{float(metric(model(tokens))):.3f}")
    plain = model.generate(tokens, max_new_tokens=6, do_sample=False, verbose=False)
    with steer(model, tc, best.feature, 8.0):
        steered = model.generate(tokens, max_new_tokens=6, do_sample=False, verbose=False)
    n = tokens.shape[1]
    print(f"generation: {model.to_string(plain[0, n:])!r}; "
          f"steered: {model.to_string(steered[0, n:])!r}")


if __name__ == "__main__":
    main()
