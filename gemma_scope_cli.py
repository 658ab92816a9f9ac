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
    p.set_defaults(handler="gemma_scope_ext.demo:main")


SUBCOMMANDS = [_add_demo]


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
