"""``gemma-scope features``: feature dashboards for SAEs and transcoders, as a static site.

SAEs are given as ``gemma-scope eval`` takes them (a saved folder, or ``RELEASE:SAE_ID``, whose
catalog entry gives the latents' Neuronpedia links). One
streaming pass over ``--tokens`` tokens records every latent; the site is written to ``--out``
with the collected data beside it, so ``--render-only`` can redraw it without the model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gemma_scope_ext.cli.eval import DTYPES, load_sae


def _config(args: argparse.Namespace):
    from gemma_scope_ext.features.config import FeatureConfig

    return FeatureConfig(top_k=args.top_k, n_quantiles=args.quantiles,
                         per_quantile=args.per_quantile, context_before=args.context_before,
                         context_after=args.context_after, n_logits=args.n_logits,
                         seed=args.seed)  # fmt: skip


def main(args: argparse.Namespace) -> int:
    from gemma_scope_ext.features.site import render_saved

    out = Path(args.out)
    if args.render_only:
        index = render_saved(out)
        print(f"redrew the dashboards in {out} from their stored data; open {index.resolve().as_uri()}")
        return 0
    if not args.sae:
        raise ValueError("give at least one --sae FOLDER|RELEASE:SAE_ID (or --render-only)")
    if args.tokens < 1 or args.seq_len < 2 or args.batch_size < 1:
        raise ValueError(f"need --tokens >= 1, --seq-len >= 2 and --batch-size >= 1; got "
                         f"{args.tokens}, {args.seq_len}, {args.batch_size}")  # fmt: skip
    config = _config(args)  # checked before anything loads
    from gemma_scope_ext.features.build import collect_features
    from gemma_scope_ext.features.site import write_dashboard
    from gemma_scope_ext.features.source import token_stream
    from gemma_scope_ext.models.loading import load_model

    model = load_model(args.model, device=args.device, dtype=DTYPES[args.dtype],
                       as_bridge=args.bridge)
    device = str(model.cfg.device)
    loaded = [load_sae(spec, device) for spec in args.sae]
    stream = token_stream(args.dataset, model.tokenizer, args.tokens, args.seq_len, args.batch_size)
    datas = collect_features(model, [s for _, s in loaded], stream.batches, config=config,
                             names=[n for n, _ in loaded], batch_size=args.batch_size,
                             progress=not args.quiet, total_rows=stream.n_rows)  # fmt: skip
    index = write_dashboard(datas, out, progress=not args.quiet)
    for d in datas:
        alive = int((d.fires > 0).sum())
        print(f"{d.info.name}: {d.d_sae} latents, {alive} fired over {d.n_tokens:,} tokens")
    print(f"wrote the dashboards to {out}; open {index.resolve().as_uri()}")
    return 0
