"""``gemma-scope graph``: one prompt's attribution graph, pruned, as circuit-tracer's graph JSON and
a self-contained HTML page.

Writes ``OUT/SLUG.json`` (circuit-tracer's viewer opens it; ``graph-metadata.json`` beside it lists
the graphs in the folder, as circuit-tracer's local server expects) and ``OUT/SLUG.html``, and
prints the replacement and completeness scores. Transcoders (or SAEs of any site) are saved folders
or ``RELEASE:SAE_ID`` pairs, loaded as ``gemma-scope eval`` loads them.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from gemma_scope_ext.cli.eval import DTYPES, load_sae
from gemma_scope_ext.files import write_json, write_text


def _slug(prompt: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40] or "graph"


def _tokens(model, prompt: str) -> torch.Tensor:
    tokens = model.to_tokens(prompt, prepend_bos=True)
    if tokens.shape[1] < 2:
        raise ValueError(f"--prompt {prompt!r} gives no tokens after BOS; give some text")
    return tokens


def _targets(model, specs: list[str] | None) -> list[int] | None:
    if not specs:
        return None
    out = []
    for s in specs:
        ids = model.to_tokens(s, prepend_bos=False)[0].tolist()
        if len(ids) != 1:
            raise ValueError(f"--target {s!r} is {len(ids)} tokens ({ids}); give one token each")
        out.append(ids[0])
    return out


def _add_metadata(folder: Path, entry: dict) -> None:
    """circuit-tracer's local server lists the graphs of a folder from graph-metadata.json."""
    path = folder / "graph-metadata.json"
    graphs = json.loads(path.read_text())["graphs"] if path.exists() else []
    graphs = [g for g in graphs if g.get("slug") != entry["slug"]] + [entry]
    write_json(path, {"graphs": graphs})


def main(args: argparse.Namespace) -> int:
    from gemma_scope_ext.circuits.graph import feature_graph
    from gemma_scope_ext.circuits.graph_html import html_page
    from gemma_scope_ext.models.loading import load_model

    if not (0 <= args.node_threshold <= 1 and 0 <= args.edge_threshold <= 1):
        raise ValueError("--node-threshold and --edge-threshold must be in [0, 1]")
    if args.max_feature_nodes is not None and args.max_feature_nodes < 0:
        raise ValueError("--max-feature-nodes must be >= 0")
    if args.batch_size < 1 or args.max_n_logits < 1 or not 0 < args.desired_logit_prob <= 1:
        raise ValueError("--batch-size and --max-n-logits must be >= 1 and --desired-logit-prob "
                         "in (0, 1]")
    for spec in args.transcoders:
        if not Path(spec).is_dir() and ":" not in spec:
            raise FileNotFoundError(f"--transcoders {spec!r} is neither a folder nor "
                                    "RELEASE:SAE_ID (e.g. gemma-scope-2b-pt-transcoders:"
                                    "layer_12/width_16k/average_l0_6)")
    model = load_model(args.model, device=args.device, dtype=DTYPES[args.dtype],
                       as_bridge=args.bridge)
    device = str(model.cfg.device)
    loaded = [load_sae(spec, device) for spec in args.transcoders]
    tokens = _tokens(model, args.prompt).to(device)
    graph = feature_graph(
        model, [sae for _, sae in loaded], tokens, batch_size=args.batch_size,
        progress=not args.quiet, targets=_targets(model, args.target), softcap=args.softcap,
        max_feature_nodes=args.max_feature_nodes, drop_bos=args.drop_bos,
        max_n_logits=args.max_n_logits, desired_logit_prob=args.desired_logit_prob)
    scores = graph.scores()
    pruned = graph.prune(args.node_threshold, args.edge_threshold)
    slug = args.slug or _slug(args.prompt)
    out = Path(args.out)
    data = pruned.to_dict(slug, scan=",".join(args.transcoders), node_threshold=args.node_threshold)
    data["metadata"]["gemma_scope"]["scores"] = scores._asdict()
    write_json(out / f"{slug}.json", data, indent=1)
    _add_metadata(out, {k: v for k, v in data["metadata"].items() if k != "gemma_scope"})
    write_text(out / f"{slug}.html", html_page(data, slug))
    n_feat = sum(n.kind == "feature" for n in graph.nodes)
    print(f"{len(graph.nodes)} nodes ({n_feat} features), {len(graph.edges())} edges -> pruned "
          f"{len(pruned.nodes)} nodes, {len(pruned.edges())} edges")
    print(f"replacement score {scores.replacement:.4f}, completeness score "
          f"{scores.completeness:.4f}")
    print(f"wrote {out / (slug + '.json')}, {slug}.html, graph-metadata.json")
    return 0
