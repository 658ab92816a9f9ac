"""The ``gemma-scope`` command line.

Kept outside the package so that ``gemma-scope --help`` answers without importing torch: each
subcommand imports its implementation only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the main job on the embedded tiny Gemma 2 (offline)")
    p.add_argument("--prompt", default="Return the number of items in the list.")
    p.add_argument("--tokens", type=int, default=600_000, help="training tokens for the SAE")
    p.add_argument("--features-out", default="gemma_scope_demo_features",
                   help="folder for the trained SAE's feature dashboards")
    p.set_defaults(handler="gemma_scope_ext.cli.demo:main")


def _add_list(sub) -> None:
    p = sub.add_parser("list", help="list Gemma Scope releases, or the SAEs matching filters")
    p.add_argument("--model", help="e.g. gemma-2-2b, gemma-2-9b-it")
    p.add_argument("--site", help="res, mlp, att, embedding or transcoder")
    p.add_argument("--layer", type=int)
    p.add_argument("--width", help="number of latents or a label such as 16k, 1m")
    p.add_argument("--l0", type=float, help="keep the SAE with the nearest average L0 per site")
    p.add_argument("--canonical", action="store_true", help="only the canonical SAEs (L0 nearest 100)")
    p.set_defaults(handler="gemma_scope_ext.cli.catalog:list_saes")


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="show what is known about one Gemma Scope SAE")
    p.add_argument("release", help="e.g. gemma-scope-2b-pt-res")
    p.add_argument("sae_id", help="e.g. layer_20/width_16k/average_l0_71")
    p.set_defaults(handler="gemma_scope_ext.cli.catalog:info")


def _add_download(sub) -> None:
    p = sub.add_parser("download", help="download, check and convert one Gemma Scope SAE")
    p.add_argument("release", help="e.g. gemma-scope-2b-pt-res")
    p.add_argument("sae_id", help="e.g. layer_20/width_16k/average_l0_71")
    p.add_argument("--revision", help="branch, tag or commit of the Hugging Face repo")
    p.add_argument("--force", action="store_true", help="download again even if cached")
    p.set_defaults(handler="gemma_scope_ext.cli.catalog:download")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="delta LM loss, FVU and L0 of SAEs; JSON and PNG plots")
    p.add_argument("--model", default="tiny-gemma2",
                   help="tiny-gemma2 (offline) or a Gemma 2 name, e.g. gemma-2-2b")
    p.add_argument("--sae", action="append", required=True, metavar="FOLDER|RELEASE:SAE_ID",
                   help="an SAE folder (sae.save_model) or a release and id; repeat for several")
    p.add_argument("--dataset", action="append", metavar="NAME[:SPLIT]",
                   help="docstrings (built in, offline) or a Hugging Face dataset with a text "
                        "column; repeat for several (default: docstrings)")
    p.add_argument("--n-seqs", type=int, default=32, help="rows of tokens per dataset")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per row, BOS included")
    p.add_argument("--batch-size", type=int, default=8, help="rows per forward pass")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--device", default=None, help="default: cuda when available (cpu for tiny)")
    p.add_argument("--dense-threshold", type=float, default=0.1,
                   help="latents firing on more than this fraction of tokens count as dense")
    p.add_argument("--no-ablations", action="store_true",
                   help="skip the zero- and mean-ablation losses")
    p.add_argument("--out", default="gemma_scope_eval", help="folder for eval.json and PNGs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler="gemma_scope_ext.cli.eval:main")


def _add_features(sub) -> None:
    p = sub.add_parser("features", help="feature dashboards (static HTML) for SAEs and transcoders")
    p.add_argument("--sae", action="append", metavar="FOLDER|RELEASE:SAE_ID",
                   help="an SAE folder (sae.save_model) or a release and id; repeat for several")
    p.add_argument("--model", default="tiny-gemma2",
                   help="tiny-gemma2 (offline) or a Gemma 2 name, e.g. gemma-2-2b")
    p.add_argument("--tokens", type=int, default=16_384,
                   help="tokens to run over (whole rows of --seq-len; BOS/EOS/pad never count)")
    p.add_argument("--dataset", default="docstrings", metavar="SOURCE",
                   help="docstrings[:eval|train] (built in, offline), a token file (.npy/.pt/"
                        ".safetensors, integer [rows, seq_len]) or a Hugging Face dataset with a "
                        "text column (NAME[:SPLIT], streamed)")
    p.add_argument("--out", default="gemma_scope_features", help="folder for the site and its data")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per row, BOS included")
    p.add_argument("--batch-size", type=int, default=8, help="rows per forward pass")
    p.add_argument("--top-k", type=int, default=16, help="top activating contexts per latent")
    p.add_argument("--quantiles", type=int, default=4,
                   help="equal-mass activation bins to show sampled examples from")
    p.add_argument("--per-quantile", type=int, default=4, help="examples per quantile bin")
    p.add_argument("--context-before", type=int, default=10, help="tokens shown before a firing")
    p.add_argument("--context-after", type=int, default=3, help="tokens shown after a firing")
    p.add_argument("--n-logits", type=int, default=10,
                   help="promoted and suppressed tokens listed per latent")
    p.add_argument("--seed", type=int, default=0, help="seed of the quantile examples' sampling")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--device", default=None, help="default: cuda when available (cpu for tiny)")
    p.add_argument("--render-only", action="store_true",
                   help="redraw the site in --out from the data stored there; loads no model")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler="gemma_scope_ext.cli.features:main")

SUBCOMMANDS = [_add_demo, _add_list, _add_info, _add_download, _add_eval, _add_features]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemma-scope",
        description="Gemma Scope SAEs and transcoders for TransformerLens and SAELens.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, func = args.handler.split(":")
    try:
        return int(getattr(importlib.import_module(module), func)(args) or 0)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        print(f"gemma-scope {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
