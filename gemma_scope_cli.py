"""The ``gemma-scope`` command line.

Kept outside the package so that ``gemma-scope --help`` answers without importing torch: each
subcommand imports its implementation only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1, refused at parse time with the value shown."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the main job on an embedded tiny model (offline)")
    p.add_argument("--model", default="tiny-gemma2",
                   help="embedded tiny model to train on: tiny-gemma2 (default) or tiny-gemma3")
    p.add_argument("--prompt", default="Return the number of items in the list.",
                   help="text whose tokens' strongest latents are printed at the end")
    p.add_argument("--tokens", type=positive_int, default=300_000,
                   help="training tokens for the SAE (default 300,000)")
    p.add_argument("--out", default="gemma_scope_demo/sae",
                   help="folder the trained SAE is saved to (default gemma_scope_demo/sae)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an SAE already saved in --out")
    p.add_argument("--features-out", default=None,
                   help="folder for the trained SAE's feature dashboards (default: features/ "
                        "beside --out)")
    p.set_defaults(handler="gemma_scope_ext.cli.demo:main")


def _add_list(sub) -> None:
    p = sub.add_parser("list", help="list Gemma Scope releases, or the SAEs matching filters")
    p.add_argument("--model", help="e.g. gemma-2-2b, gemma-2-9b-it, gemma-3-1b-pt")
    p.add_argument("--site", help="res, mlp, att, embedding or transcoder")
    p.add_argument("--generation", type=int, choices=(1, 2),
                   help="1: Gemma Scope (Gemma 2); 2: Gemma Scope 2 (Gemma 3); default both")
    p.add_argument("--skip", choices=("yes", "no"),
                   help="Gemma Scope 2 transcoders with (yes) or without (no) a skip connection")
    p.add_argument("--layer", type=int, help="block index, e.g. 20")
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
    p = sub.add_parser("download", help="download and check one Gemma Scope SAE (a compressed npz is also converted)")
    p.add_argument("release", help="e.g. gemma-scope-2b-pt-res")
    p.add_argument("sae_id", help="e.g. layer_20/width_16k/average_l0_71")
    p.add_argument("--revision", help="branch, tag or commit of the Hugging Face repo")
    p.add_argument("--force", action="store_true", help="download again even if cached")
    p.add_argument("--verify", action="store_true",
                   help="check the file's sha256 against the name Hugging Face stored it under")
    p.set_defaults(handler="gemma_scope_ext.cli.catalog:download")


def _add_bridge(p) -> None:
    p.add_argument("--bridge", action="store_true",
                   help="run the model as a TransformerBridge (TransformerLens 4's model class) "
                        "instead of a HookedTransformer; the same hooks and numbers")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="delta LM loss, FVU and L0 of SAEs; JSON and PNG plots")
    p.add_argument("--model", default="tiny-gemma2",
                   help="tiny-gemma2 (offline) or a Gemma 2 name, e.g. gemma-2-2b")
    p.add_argument("--sae", action="append", required=True, metavar="FOLDER|RELEASE:SAE_ID",
                   help="an SAE folder (sae.save_model) or a release and id; repeat for several")
    p.add_argument("--dataset", action="append", metavar="NAME[:SPLIT]",
                   help="docstrings (built in, offline) or a Hugging Face dataset with a text "
                        "column; repeat for several (default: docstrings)")
    p.add_argument("--n-seqs", type=positive_int, default=32, help="rows of tokens per dataset")
    p.add_argument("--seq-len", type=positive_int, default=128,
                   help="tokens per row, BOS included (at least 2)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="rows per forward pass")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="model and SAE precision; metrics are accumulated in float64 either way")
    p.add_argument("--device", default=None, help="default: cuda when available (cpu for tiny)")
    p.add_argument("--dense-threshold", type=float, default=0.1,
                   help="latents firing on more than this fraction of tokens count as dense")
    p.add_argument("--no-ablations", action="store_true",
                   help="skip the zero- and mean-ablation losses")
    p.add_argument("--out", default="gemma_scope_eval", help="folder for eval.json and PNGs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_bridge(p)
    p.set_defaults(handler="gemma_scope_ext.cli.eval:main")


def _add_graph(sub) -> None:
    p = sub.add_parser("graph", help="attribution graph of one prompt: circuit-tracer JSON + HTML")
    p.add_argument("--prompt", required=True, help="the text (BOS is prepended)")
    p.add_argument("--transcoders", nargs="+", action="extend", required=True,
                   metavar="FOLDER|RELEASE:SAE_ID",
                   help="transcoders (or SAEs of any site), as saved folders or release:id pairs; "
                        "layers without an MLP-side SAE become error nodes")
    p.add_argument("--out", default="gemma_scope_graph", help="folder for SLUG.json and SLUG.html")
    p.add_argument("--slug", help="file name and graph id (default: from the prompt)")
    p.add_argument("--model", default="tiny-gemma2",
                   help="tiny-gemma2 (offline) or a Gemma 2 name, e.g. gemma-2-2b")
    p.add_argument("--target", action="append", metavar="TOKEN",
                   help="a logit target (one token of text); repeat for several (default: the "
                        "top tokens up to --desired-logit-prob, weighted by probability)")
    p.add_argument("--max-n-logits", type=positive_int, default=10,
                   help="at most this many default logit targets")
    p.add_argument("--desired-logit-prob", type=float, default=0.95,
                   help="default logit targets cover this much probability")
    p.add_argument("--softcap", choices=["pre", "post"], default="pre",
                   help="logit targets read logits before (circuit-tracer's, exact) or after "
                        "Gemma 2's final soft-cap (what the model reports, linearised)")
    p.add_argument("--max-feature-nodes", type=int, default=None,
                   help="attribute at most this many features, most influential first "
                        "(memory then grows linearly with the prompt)")
    p.add_argument("--drop-bos", action="store_true",
                   help="leave out feature and error nodes at position 0, as circuit-tracer does")
    p.add_argument("--node-threshold", type=float, default=0.8,
                   help="pruning keeps the nodes carrying this share of the influence")
    p.add_argument("--edge-threshold", type=float, default=0.98,
                   help="pruning keeps the edges carrying this share of the edge influence")
    p.add_argument("--batch-size", type=positive_int, default=32, help="rows per backward pass")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="precision the model runs in")
    p.add_argument("--device", default=None, help="default: cuda when available (cpu for tiny)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_bridge(p)
    p.set_defaults(handler="gemma_scope_ext.cli.graph:main")


def _add_features(sub) -> None:
    p = sub.add_parser("features", help="feature dashboards (static HTML) for SAEs and transcoders")
    p.add_argument("--sae", action="append", metavar="FOLDER|RELEASE:SAE_ID",
                   help="an SAE folder (sae.save_model) or a release and id; repeat for several")
    p.add_argument("--model", default="tiny-gemma2",
                   help="tiny-gemma2 (offline) or a Gemma 2 name, e.g. gemma-2-2b")
    p.add_argument("--tokens", type=positive_int, default=16_384,
                   help="tokens to run over (whole rows of --seq-len; BOS/EOS/pad never count)")
    p.add_argument("--dataset", default="docstrings", metavar="SOURCE",
                   help="docstrings[:eval|train] (built in, offline), a token file (.npy/.pt/"
                        ".safetensors, integer [rows, seq_len]) or a Hugging Face dataset with a "
                        "text column (NAME[:SPLIT], streamed)")
    p.add_argument("--out", default="gemma_scope_features", help="folder for the site and its data")
    p.add_argument("--seq-len", type=positive_int, default=128, help="tokens per row, BOS included")
    p.add_argument("--batch-size", type=positive_int, default=8, help="rows per forward pass")
    p.add_argument("--top-k", type=positive_int, default=16, help="top activating contexts per latent")
    p.add_argument("--quantiles", type=positive_int, default=4,
                   help="equal-mass activation bins to show sampled examples from")
    p.add_argument("--per-quantile", type=positive_int, default=4, help="examples per quantile bin")
    p.add_argument("--context-before", type=int, default=10, help="tokens shown before a firing")
    p.add_argument("--context-after", type=int, default=3, help="tokens shown after a firing")
    p.add_argument("--n-logits", type=positive_int, default=10,
                   help="promoted and suppressed tokens listed per latent")
    p.add_argument("--seed", type=int, default=0, help="seed of the quantile examples' sampling")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="precision the model runs in")
    p.add_argument("--device", default=None, help="default: cuda when available (cpu for tiny)")
    p.add_argument("--render-only", action="store_true",
                   help="redraw the site in --out from the data stored there; loads no model")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_bridge(p)
    p.set_defaults(handler="gemma_scope_ext.cli.features:main")

def _add_harvest(sub) -> None:
    p = sub.add_parser("harvest", help="run the model once and store activations of many hooks")
    p.add_argument("--model", default="tiny-gemma2",
                   help="tiny-gemma2 (offline) or a Gemma 2 name, e.g. gemma-2-2b")
    p.add_argument("--site", action="append", required=True,
                   help="res, mlp, att, embedding or transcoder (input and target); repeat")
    p.add_argument("--layer", type=int, action="append", help="block index; repeat for several")
    p.add_argument("--tokens", type=positive_int, default=100_000,
                   help="token positions to run over (special tokens are then dropped)")
    p.add_argument("--dataset", default="docstrings:train",
                   help="docstrings[:train|eval] (built in) or a token file with 'tokens' rows")
    p.add_argument("--context-size", type=positive_int, default=1024, help="tokens per row")
    p.add_argument("--rows-per-shard", type=positive_int, default=8,
                   help="token rows per forward pass and per shard")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="precision the activations are stored in")
    p.add_argument("--device", default=None, help="default: cuda when available (cpu for tiny)")
    p.add_argument("--out", required=True, help="cache folder (rerun to continue a harvest)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler="gemma_scope_ext.cli.suite:harvest")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a suite of SAEs and transcoders (SUITE.yaml)")
    p.add_argument("suite", help="YAML file with SuiteConfig's fields (entries: list or ladder)")
    p.add_argument("--log-every", type=int, default=100,
                   help="write a metrics line every this many steps (0: only finished entries)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler="gemma_scope_ext.cli.suite:train")


SUBCOMMANDS = [_add_demo, _add_list, _add_info, _add_download, _add_eval, _add_graph,
               _add_features, _add_harvest, _add_train]


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
    except (ValueError, KeyError, OSError, RuntimeError) as err:
        print(f"gemma-scope {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
