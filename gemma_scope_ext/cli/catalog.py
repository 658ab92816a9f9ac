"""``gemma-scope list``, ``info`` and ``download``: the catalog and the loader as commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from gemma_scope_ext.pretrained.catalog import get_entry, list_releases
from gemma_scope_ext.pretrained.query import find_saes, why_empty

__all__ = ["download", "info", "list_saes"]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines
    )


def list_saes(args: argparse.Namespace) -> int:
    """Without filters, the releases; with any filter, the matching SAEs."""
    generation = getattr(args, "generation", None)
    skip = {None: None, "yes": True, "no": False}[getattr(args, "skip", None)]
    filters = dict(model=args.model, site=args.site, layer=args.layer, width=args.width, l0=args.l0)
    if all(v is None for v in filters.values()) and not args.canonical and skip is None:
        rows = [
            [r.name, str(r.generation), r.model, ",".join(r.sites), str(r.n_saes), r.repo_id]
            for r in list_releases()
            if generation in (None, r.generation)
        ]
        print(_table(["release", "gen", "model", "sites", "ids", "repo"], rows))
        return 0
    hits = [
        e
        for e in find_saes(**filters, generation=generation, skip=skip)
        if e.canonical or not args.canonical
    ]
    rows = [
        [e.release, e.sae_id, e.site, "-" if e.layer is None else str(e.layer), e.width_label,
         str(e.l0) + (f" ({e.l0_label})" if e.l0_label else ""), "yes" if e.skip else "",
         "*" if e.canonical else "", e.neuronpedia_id or ""]
        for e in hits
    ]  # fmt: skip
    if not rows:
        filters.pop("l0")
        reason = why_empty(**filters, generation=generation) or (
            "none of them is canonical" if args.canonical else "none has that skip connection"
        )
        print(f"no Gemma Scope SAE matches: {reason}; run `gemma-scope list` to see the releases")
        return 1
    header = ["release", "sae_id", "site", "layer", "width", "L0", "skip", "canon", "neuronpedia"]
    print(_table(header, rows))
    return 0


def info(args: argparse.Namespace) -> int:
    """Everything the catalog knows about one id, and whether it is on this machine."""
    from huggingface_hub import try_to_load_from_cache

    from gemma_scope_ext.pretrained.catalog import expected_shapes
    from gemma_scope_ext.pretrained.hub import hub_cache

    e = get_entry(args.release, args.sae_id)
    shapes = expected_shapes(e)
    size = 4 * sum(_numel(s) for s in shapes.values())
    local = try_to_load_from_cache(e.repo_id, e.filename, cache_dir=hub_cache())
    fields = {
        "release": e.release,
        "sae_id": e.sae_id,
        "kind": e.kind,
        "model": e.model,
        "site": e.site,
        "layer": "-" if e.layer is None else e.layer,
        "width": f"{e.width} ({e.width_label})",
        "average L0": e.l0 if e.l0_label is None else f"{e.l0} ({e.l0_label})",
        "skip": "x W_skip^T beside the latents" if e.skip else "-",
        "canonical": e.canonical,
        "hook": e.hook_name,
        "hook out": e.hook_name_out,
        "file": f"https://huggingface.co/{e.repo_id}/blob/main/{e.filename}",
        "shapes": ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items()),
        "size": f"{size / 1e6:.1f} MB",
        "neuronpedia": f"https://www.neuronpedia.org/{e.neuronpedia_id}"
        if e.neuronpedia_id
        else "-",
        "downloaded": local if isinstance(local, str) else "no",
    }
    if isinstance(local, str):
        fields["converted"] = _converted(e, local)
    print("\n".join(f"{k + ':':<12} {v}" for k, v in fields.items()))
    return 0


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def download(args: argparse.Namespace) -> int:
    """Download the weights file into the Hugging Face cache, check it, and (for a compressed
    params.npz) convert it for fast loads."""
    from gemma_scope_ext.pretrained.hub import download_params
    from gemma_scope_ext.pretrained.loader import load_params

    e = get_entry(args.release, args.sae_id)
    load_params(e, revision=args.revision, force_download=args.force, verify=args.verify)
    npz = download_params(e, revision=args.revision)
    print(f"{Path(e.filename).name + ':':<12} {npz}\nconverted:   {_converted(e, npz)}")
    return 0


def _converted(e, npz) -> str:
    """Where the fast-load copy is, or why there is none."""
    from gemma_scope_ext.pretrained.cache import cache_path
    from gemma_scope_ext.pretrained.npz import IntegrityError, all_stored

    if e.generation == 2:
        return "not needed (safetensors: read in place)"
    try:
        if all_stored(npz):
            return "not needed (uncompressed: memory-mapped in place)"
    except IntegrityError as err:
        return f"no: the file is damaged ({err})"
    cached = cache_path(e, npz)
    return str(cached) if cached.exists() else "no (converted on first load)"
