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


def load_sae(spec: str, device: str) -> tuple[str, Any]:
    """A name and the SAE for one ``--sae`` value: a saved folder, or ``RELEASE:SAE_ID``."""
    path = Path(spec)
    if path.is_dir():
        from sae_lens import SAE

        import gemma_scope_ext  # noqa: F401  (registers the package's SAE classes)

        return path.name, SAE.load_from_disk(str(path), device=device)
    if ":" not in spec:
        raise FileNotFoundError(
            f"--sae {spec!r} is neither a folder nor RELEASE:SAE_ID; pass a folder written by "
            "sae.save_model, or e.g. gemma-scope-2b-pt-res-canonical:layer_20/width_16k/canonical"
        )
    release, sae_id = spec.split(":", 1)
    from gemma_scope_ext.pretrained.loader import from_pretrained

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


def main(args: argparse.Namespace) -> int:
    from gemma_scope_ext.evals.plots import plot_by_dataset, plot_by_position, plot_l0_vs_delta_loss
    from gemma_scope_ext.models.loading import load_model

    if args.n_seqs < 1 or args.seq_len < 2 or args.batch_size < 1:
        raise ValueError("--n-seqs and --batch-size must be >= 1 and --seq-len >= 2")
    model = load_model(args.model, device=args.device, dtype=DTYPES[args.dtype])
    device = str(model.cfg.device)
    loaded = [load_sae(spec, device) for spec in args.sae]
    names = _unique([name for name, _ in loaded])
    saes = [sae for _, sae in loaded]
    specs = args.dataset or [BUILTIN]
    datasets = _unique(specs)
    out = Path(args.out)
    results: dict[str, dict[str, EvalResult]] = {}
    for data, spec in zip(datasets, specs, strict=True):
        tokens = load_tokens(spec, model.tokenizer, args.n_seqs, args.seq_len)
        evals = evaluate_many(model, saes, tokens, batch_size=args.batch_size,
                              ablations=not args.no_ablations,
                              dense_threshold=args.dense_threshold, progress=not args.quiet)
        results[data] = dict(zip(names, evals, strict=True))
    write_json(out / "eval.json", {
        "model": args.model, "dtype": args.dtype, "n_seqs": args.n_seqs, "seq_len": args.seq_len,
        "saes": dict(zip(names, args.sae, strict=True)),
        "datasets": dict(zip(datasets, specs, strict=True)),
        "results": {d: SweepResult(tuple(per), tuple(per.values())).to_dict()
                    for d, per in results.items()},
    })  # fmt: skip
    first = datasets[0]
    plot_l0_vs_delta_loss(results[first], out / "l0_vs_delta_loss.png",
                          title=f"{args.model} on {first}")
    plot_by_position(results[first], out / "by_position.png", title=f"{args.model} on {first}")
    plot_by_dataset(results, out / "by_dataset.png", title=f"{args.model}")
    print(_table(results))
    print(f"\nwrote {out / 'eval.json'}, l0_vs_delta_loss.png, by_position.png, by_dataset.png")
    return 0
