"""``gemma-scope harvest`` and ``gemma-scope train SUITE.yaml``: the suite runner from the shell.

The YAML file holds ``SuiteConfig``'s fields; ``entries`` may be a list of entries or a ladder
(``{sites: [...], layers: [...], d_sae: N, l0_coefficients: [...]}``, as ``suite_entries`` takes).
Metrics go to ``OUTPUT/metrics.jsonl``, one JSON object a line, as they are produced.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from gemma_scope_ext.files import check_writable_dir


def read_suite(path: str | Path):
    """The ``SuiteConfig`` a YAML (or JSON) file describes; clear errors for bad files."""
    import yaml

    from gemma_scope_ext.training.suite_config import SuiteConfig, suite_entries

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"suite file {path} does not exist")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "entries" not in data or "model_name" not in data:
        raise ValueError(f"{path} must be a mapping with at least model_name, entries and "
                         "training_tokens (the fields of SuiteConfig)")  # fmt: skip
    entries = data["entries"]
    if isinstance(entries, dict):
        data["entries"] = suite_entries(data["model_name"], **entries)
    return SuiteConfig.from_dict(data)


def _json_lines(path: Path):
    def log(record: dict[str, Any]) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        with open(path, "a", encoding="utf-8") as f:  # appended, one whole line a record
            f.write(line + "\n")

    return log


def train(args: argparse.Namespace) -> int:
    cfg = read_suite(args.suite)  # checked before any model loads
    out = check_writable_dir(cfg.output_path, "suite output folder")
    from gemma_scope_ext.training.suite_runner import SuiteTrainingRunner

    runner = SuiteTrainingRunner(cfg, progress=not args.quiet,
                                 metrics_log=_json_lines(out / "metrics.jsonl"),
                                 log_every=args.log_every)  # fmt: skip
    first = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks for the job
    if not runner.todo and first:
        print(f"every entry of {args.suite} is already trained; see {out / 'manifest.json'}")
    manifest = runner.run()
    if first:
        print(f"{len(manifest['entries'])} entries in {out / 'manifest.json'}")
    return 0


def harvest(args: argparse.Namespace) -> int:
    from gemma_scope_ext.models.sites import hook_name, hook_name_out

    hooks: list[str] = []
    for site in args.site:
        for layer in args.layer or [None]:
            hooks.append(hook_name(args.model, site, layer))
            if site == "transcoder":
                hooks.append(hook_name_out(args.model, site, layer))
    check_writable_dir(args.out, "cache folder")
    from gemma_scope_ext.activations.harvest import harvest as run_harvest
    from gemma_scope_ext.models.loading import load_model
    from gemma_scope_ext.training.suite_sources import special_token_ids, suite_tokens

    model = load_model(args.model, device=args.device)
    tokens = suite_tokens(args.dataset, model.tokenizer, args.tokens, args.context_size)
    n_rows = min(len(tokens), -(-args.tokens // args.context_size))
    manifest = run_harvest(model, tokens[:n_rows], hooks, args.out, args.model,
                           rows_per_shard=args.rows_per_shard, dtype=args.dtype,
                           special_ids=special_token_ids(model.tokenizer),
                           progress=not args.quiet)  # fmt: skip
    rows = sum(s["rows"] for s in manifest["shards"])
    print(f"{len(manifest['shards'])} shards, {rows:,} activations of {len(hooks)} hooks in {args.out}")
    return 0
