"""``gemma-scope eval``: SAEs on a Gemma 2 model and token sources; JSON and PNG plots to a folder.

SAEs are local folders (``SAE.save_model`` output) or ``RELEASE:SAE_ID`` pairs for
:func:`gemma_scope_ext.from_pretrained`. Token sources are ``docstrings[:eval|train]`` (built in,
offline) or ``HF_DATASET[:split]`` (a Hugging Face dataset with a ``text`` column, online).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from gemma_scope_ext.evals.breakdowns import SweepResult, write_json
from gemma_scope_ext.evals.metrics import EvalResult, evaluate_many

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
BUILTIN = "docstrings"


def check_sae_spec(spec: str) -> Path | tuple[str, str]:
    """Where one ``--sae`` value points, checked without loading it: a folder, or (release, id)."""
    path = Path(spec)
    if path.is_dir():
        if not (path / "cfg.json").is_file():
            raise FileNotFoundError(
                f"--sae {spec!r} is a folder without cfg.json; expected a folder written by "
                "sae.save_model (sae_weights.safetensors and cfg.json)"
            )
        return path
    if ":" not in spec:
        raise FileNotFoundError(
            f"--sae {spec!r} is neither a folder nor RELEASE:SAE_ID; pass a folder written by "
            "sae.save_model, or e.g. gemma-scope-2b-pt-res-canonical:layer_20/width_16k/canonical"
        )
    release, sae_id = spec.split(":", 1)
    if any(c in release for c in "/\\") or release.startswith((".", "~")):
        raise FileNotFoundError(
            f"--sae {spec!r}: no SAE folder at {path} (and {release!r} is a path, not a release "
            "name); check the folder, or pass RELEASE:SAE_ID as `gemma-scope list` shows them"
        )
    from gemma_scope_ext.pretrained.catalog import get_entry

    get_entry(release, sae_id)  # an unknown id fails here, naming the closest ones
    return release, sae_id


def load_sae(spec: str, device: str) -> tuple[str, Any]:
    """A name and the SAE for one ``--sae`` value: a saved folder, or ``RELEASE:SAE_ID``."""
    where = check_sae_spec(spec)
    if isinstance(where, Path):
        from sae_lens import SAE

        import gemma_scope_ext  # noqa: F401  (registers the package's SAE classes)

        return where.name, SAE.load_from_disk(str(where), device=device)
    from gemma_scope_ext.pretrained.loader import from_pretrained

    release, sae_id = where
    return sae_id, from_pretrained(release, sae_id, device=device)


def _pack(tokenizer, texts, n_seqs: int, seq_len: int) -> torch.Tensor:
    """Documents packed end to end with EOS between them, BOS first in every row."""
    body, ids = seq_len - 1, []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
        if len(ids) >= n_seqs * body:
            rows = torch.tensor(ids[: n_seqs * body]).view(n_seqs, body)
            return torch.cat([torch.full((n_seqs, 1), tokenizer.bos_token_id), rows], dim=1)
    raise ValueError(f"the dataset ran out after {len(ids)} tokens; need {n_seqs} x {body}")


def load_tokens(spec: str, tokenizer, n_seqs: int, seq_len: int) -> torch.Tensor:
    """Token rows [n_seqs, seq_len] for one ``--dataset`` value."""
    name, _, split = spec.partition(":")
    if name == BUILTIN:
        from gemma_scope_ext.models.text import sample_tokens

        return sample_tokens(tokenizer, n_seqs, seq_len, split or "eval")
    try:
        from datasets import load_dataset

        rows = load_dataset(name, split=split or "train", streaming=True)
        return _pack(tokenizer, (r["text"] for r in rows), n_seqs, seq_len)
    except (ImportError, OSError, ConnectionError) as err:
        raise RuntimeError(
            f"could not read Hugging Face dataset {name!r} ({type(err).__name__}: {err}); it needs "
            f"the `datasets` package and the hub. Offline, use --dataset {BUILTIN}"
        ) from err


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def _table(results: dict[str, dict[str, EvalResult]]) -> str:
    lines = ["| dataset | SAE | L0 | FVU | delta loss | clean loss | loss recovered | dead |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for data, per in results.items():
        for name, r in per.items():
            rec = "-" if r.loss_recovered is None else f"{r.loss_recovered:.3f}"
            lines.append(f"| {data} | {name} | {r.l0:.1f} | {r.fvu:.4f} | {r.delta_loss:.4f} | "
                         f"{r.clean_loss:.4f} | {rec} | {r.frac_dead:.3f} |")
    return "\n".join(lines)


def _outputs(args: argparse.Namespace, names, datasets, specs, results) -> dict[str, Any]:
    return {
        "model": args.model, "dtype": args.dtype, "n_seqs": args.n_seqs, "seq_len": args.seq_len,
        "saes": dict(zip(names, args.sae, strict=True)),
        "datasets": dict(zip(datasets, specs, strict=True)),
        "results": {d: SweepResult(tuple(per), tuple(per.values())).to_dict()
                    for d, per in results.items()},
    }  # fmt: skip


def main(args: argparse.Namespace) -> int:
    from gemma_scope_ext.devices import resolve_device
    from gemma_scope_ext.evals.plots import plot_by_dataset, plot_by_position, plot_l0_vs_delta_loss
    from gemma_scope_ext.files import check_writable_dir
    from gemma_scope_ext.models.families import get_spec
    from gemma_scope_ext.models.loading import load_model
    from gemma_scope_ext.models.text import check_split

    # Everything that can be checked without the model is checked before it loads.
    if args.n_seqs < 1 or args.seq_len < 2 or args.batch_size < 1:
        raise ValueError("--n-seqs and --batch-size must be >= 1 and --seq-len >= 2")
    if not 0 < args.dense_threshold <= 1:
        raise ValueError(f"--dense-threshold must be in (0, 1], got {args.dense_threshold}")
    get_spec(args.model)
    if args.device is not None:
        resolve_device(args.device)
    for spec in args.sae:
        check_sae_spec(spec)
    specs = args.dataset or [BUILTIN]
    for spec in specs:
        name, _, split = spec.partition(":")
        if name == BUILTIN and split:
            check_split(split)
    datasets = _unique(specs)
    out = check_writable_dir(args.out, "--out folder")
    model = load_model(args.model, device=args.device, dtype=DTYPES[args.dtype],
                       as_bridge=args.bridge)
    device = str(model.cfg.device)
    loaded = [load_sae(spec, device) for spec in args.sae]
    names = _unique([name for name, _ in loaded])
    saes = [sae for _, sae in loaded]
    tokens = {d: load_tokens(spec, model.tokenizer, args.n_seqs, args.seq_len)
              for d, spec in zip(datasets, specs, strict=True)}
    results: dict[str, dict[str, EvalResult]] = {}
    for data in datasets:
        evals = evaluate_many(model, saes, tokens[data], batch_size=args.batch_size,
                              ablations=not args.no_ablations,
                              dense_threshold=args.dense_threshold, progress=not args.quiet)
        results[data] = dict(zip(names, evals, strict=True))
    print(_table(results))  # before any file: finished results are never lost to a write error
    write_json(out / "eval.json", _outputs(args, names, datasets, specs, results))
    first = datasets[0]
    plot_l0_vs_delta_loss(results[first], out / "l0_vs_delta_loss.png",
                          title=f"{args.model} on {first}")
    plot_by_position(results[first], out / "by_position.png", title=f"{args.model} on {first}")
    plot_by_dataset(results, out / "by_dataset.png", title=f"{args.model}")
    print(f"\nwrote {out / 'eval.json'}, l0_vs_delta_loss.png, by_position.png, by_dataset.png")
    return 0
