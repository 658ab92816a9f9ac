"""The static dashboard site: HTML pages that render data files, all readable from file://.

Layout of ``out/``::

    index.html, saes.js            the SAEs in the site
    assets/dashboard.{js,css}      the only code and style (package data, copied)
    <slug>/index.html              one SAE: its latents, searchable and sortable
    <slug>/latent.html#N           one latent: contexts, histogram, output side
    <slug>/data/index.js           per-latent summary columns (density, activations, labels)
    <slug>/data/vocab.js           the texts of the tokens shown, most frequent first
    <slug>/data/chunk_NNNNN.js     full records of CHUNK latents each; a page loads one
    <slug>/features.{json,safetensors}   the collected data, to re-render without the model

Browsers refuse ``fetch`` on file:// pages, so data files are scripts calling ``GS.data`` /
``GS.chunk`` with a JSON literal. The JSON has ``<``, ``>`` and ``&`` escaped, and the pages only
ever put data into the document as text, so token strings cannot inject markup.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

from gemma_scope_ext.features.results import FeatureData
from gemma_scope_ext.features.store import load_features, save_features
from gemma_scope_ext.files import write_text

__all__ = ["CHUNK", "js_call", "render_saved", "slugify", "write_dashboard"]

CHUNK = 128
"""Latents per data chunk: a 16k SAE makes 128 files; a latent page reads one."""

_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
            ("\u2029", "\\u2029"))  # fmt: skip


def js_call(function: str, obj: Any) -> str:
    """``GS.function(<obj as JSON>);`` with the characters HTML or old JS parsers treat
    specially escaped (they only occur inside JSON strings, where the escapes mean the same)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in _ESCAPES:
        text = text.replace(char, escape)
    return f"GS.{function}({text});\n"


def slugify(name: str) -> str:
    """A folder name for an SAE name: letters, digits, ``.``, ``_`` and ``-`` only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "sae"


def _g(x: float) -> float:
    return float(f"{x:.4g}")


def _labels(data: FeatureData, n: int = 5) -> list[list[str]]:
    """Distinct texts of the centre tokens of each latent's top contexts, strongest first."""
    centre = data.top["tokens"][:, :, data.config.context_before].tolist()
    rows = data.top["row"].tolist()
    out = []
    for ids, valid in zip(centre, rows, strict=True):
        seen = dict.fromkeys(t for t, r in zip(ids, valid, strict=True) if r >= 0 and t >= 0)
        out.append([data.token_strings.get(t, f"<{t}>") for t in list(seen)[:n]])
    return out


def _summary(data: FeatureData, slug: str) -> dict[str, Any]:
    promoted = data.output.get("promoted_ids")
    strings = data.token_strings
    return {
        "sae": {**vars(data.info), "slug": slug, "d_sae": data.d_sae, "n_tokens": data.n_tokens,
                "chunk_size": CHUNK, "config": data.config.to_dict()},
        "density": [_g(x) for x in data.density.tolist()],
        "fires": data.fires.tolist(),
        "max": [_g(x) for x in data.max_activation.tolist()],
        "mean": [_g(x) for x in data.mean_activation.tolist()],
        "labels": _labels(data),
        "promoted": [[strings.get(t, f"<{t}>") for t in ids[:5]] for ids in promoted.tolist()]
        if promoted is not None else [[] for _ in range(data.d_sae)],
    }  # fmt: skip


def _vocab(data: FeatureData) -> tuple[torch.Tensor, list[int]]:
    """Token ids renumbered by how often the pages show them (frequent ones get short numbers):
    a lookup id -> rank (-1 stays -1) and the ids in rank order."""
    shown = data.quantile_examples
    lat = torch.arange(data.d_sae)[:, None, None].expand_as(shown)
    picked = data.sample["tokens"][lat[shown >= 0], shown[shown >= 0]]
    parts = [data.top["tokens"][data.top["row"] >= 0].flatten(), picked.flatten()]
    parts += [v.flatten() for k, v in data.output.items() if k.endswith("_ids")]
    parts.append(torch.tensor(data.special_token_ids, dtype=torch.long))
    ids = torch.cat([p.long() for p in parts])
    ids, counts = torch.unique(ids[ids >= 0], return_counts=True)
    order = ids[counts.argsort(descending=True, stable=True)]
    lookup = torch.full((int(order.max()) + 2 if len(order) else 1,), -1, dtype=torch.long)
    lookup[order] = torch.arange(len(order))
    return lookup, order.tolist()


def _contexts(part: dict[str, torch.Tensor], lo: int, hi: int, scale: torch.Tensor,
              lookup: torch.Tensor) -> list[list[list]]:  # fmt: skip
    """Per latent and slot: [activation, token ranks, activations in percent of the latent's max]."""
    q = (part["acts"][lo:hi] / scale.clamp(min=1e-30)[:, None, None] * 100).round()
    tokens = part["tokens"][lo:hi].long()
    ranks = torch.where(tokens >= 0, lookup[tokens.clamp(min=0)], -1)
    cols = (part["value"][lo:hi].tolist(), ranks.tolist(), q.clamp(0, 100).int().tolist())
    return [[[_g(v), t, a] for v, t, a in zip(*per, strict=True)] for per in zip(*cols, strict=True)]


def _chunk(data: FeatureData, lo: int, hi: int, lookup: torch.Tensor) -> dict[str, Any]:
    cfg = data.config
    scale = data.max_activation[lo:hi]
    top = _contexts(data.top, lo, hi, scale, lookup)
    # only the reservoir slots the quantile bins show: [latent, bin * per_quantile + k]
    picks = data.quantile_examples[lo:hi].flatten(1)
    chosen = {k: v[lo:hi].gather(1, picks.clamp(min=0).view(*picks.shape, *([1] * (v.ndim - 2)))
                                 .expand(*picks.shape, *v.shape[2:]))
              for k, v in data.sample.items()}  # fmt: skip
    sample = _contexts(chosen, 0, hi - lo, scale, lookup)
    picks = picks.view(hi - lo, cfg.n_quantiles, cfg.per_quantile).tolist()
    edges = data.quantile_edges[lo:hi].tolist()
    counts = data.hist_counts[lo:hi]
    cum = torch.cat([counts.new_zeros(len(counts), 1), counts.cumsum(1)], 1).tolist()
    width = (2.0 ** data.hist_exponent[lo:hi].double() / cfg.n_bins).tolist()
    fired, valid = (data.fires[lo:hi] > 0).tolist(), (data.top["row"][lo:hi] >= 0).tolist()
    counts = counts.tolist()
    out = {k: v[lo:hi] for k, v in data.output.items()}
    if "promoted_ids" in out:
        pro = [list(zip(a, map(_g, b), strict=True)) for a, b in zip(
            lookup[out["promoted_ids"]].tolist(), out["promoted_values"].tolist(), strict=True)]
        sup = [list(zip(a, map(_g, b), strict=True)) for a, b in zip(
            lookup[out["suppressed_ids"]].tolist(), out["suppressed_values"].tolist(), strict=True)]
    heads = out["head_norms"].tolist() if "head_norms" in out else None
    latents = []
    for j in range(hi - lo):
        w = width[j] if fired[j] else 0.0
        hist = counts[j]
        while hist and hist[-1] == 0:
            hist.pop()
        total = max(cum[j][-1], 1)
        q = [[_g(a * w), _g(b * w), _g((cum[j][b] - cum[j][a]) / total),
              sorted((sample[j][k * cfg.per_quantile + r] for r, s in enumerate(picks[j][k])
                      if s >= 0), key=lambda c: -c[0])]
             for k, (a, b) in enumerate(zip(edges[j][:-1], edges[j][1:], strict=True)) if b > a]
        entry: dict[str, Any] = {"i": lo + j, "hist": hist, "width": w, "q": q,
                                 "top": [c for c, ok in zip(top[j], valid[j], strict=True) if ok]}
        if "promoted_ids" in out:
            entry["pro"], entry["sup"] = pro[j], sup[j]
        if heads is not None:
            entry["heads"] = [_g(v) for v in heads[j]]
        latents.append(entry)
    return {"start": lo, "latents": latents}  # fmt: skip


def _asset(name: str) -> str:
    return (files("gemma_scope_ext.features") / "data" / name).read_text(encoding="utf-8")


def _write_sae(data: FeatureData, folder: Path, slug: str) -> None:
    lookup, order = _vocab(data)
    strings = [data.token_strings.get(t, f"<{t}>") for t in order]
    write_text(folder / "data" / "vocab.js", js_call("vocab", strings))
    stale = set((folder / "data").glob("chunk_*.js"))
    for n, lo in enumerate(range(0, data.d_sae, CHUNK)):
        path = folder / "data" / f"chunk_{n:05d}.js"
        write_text(path, js_call("chunk", _chunk(data, lo, min(lo + CHUNK, data.d_sae), lookup)))
        stale.discard(path)
    for path in stale:  # from an earlier, wider SAE in the same folder
        path.unlink(missing_ok=True)
    summary = _summary(data, slug)
    summary["sae"]["special"] = [int(lookup[t]) for t in data.special_token_ids
                                 if t < len(lookup) and lookup[t] >= 0]  # fmt: skip
    write_text(folder / "data" / "index.js", js_call("data", summary))
    for page in ("index.html", "latent.html"):
        write_text(folder / page, _asset(page))


def write_dashboard(
    datas: FeatureData | Sequence[FeatureData],
    out: str | os.PathLike,
    *,
    save_data: bool = True,
    slugs: Sequence[str] | None = None,
    progress: bool = False,
) -> Path:
    """Write the static site for ``datas`` into ``out``; returns the path of its ``index.html``.

    With ``save_data`` each SAE's :class:`FeatureData` is stored beside its pages
    (``features.json`` + ``features.safetensors``), so :func:`render_saved` can redraw the site.
    """
    from tqdm.auto import tqdm

    datas = [datas] if isinstance(datas, FeatureData) else list(datas)
    if not datas:
        raise ValueError("no feature data to render; pass at least one FeatureData")
    out = Path(out)
    names = list(slugs) if slugs is not None else [slugify(d.info.name) for d in datas]
    if len(set(names)) != len(names):
        names = [f"{n}-{k}" for k, n in enumerate(names)]
    for name in ("dashboard.js", "dashboard.css"):
        write_text(out / "assets" / name, _asset(name))
    listing = []
    for data, slug in tqdm(list(zip(datas, names, strict=True)), desc="writing dashboards",
                           disable=not progress):  # fmt: skip
        if save_data:
            save_features(data, out / slug)
        _write_sae(data, out / slug, slug)
        listing.append({**vars(data.info), "slug": slug, "d_sae": data.d_sae,
                        "n_tokens": data.n_tokens})  # fmt: skip
    write_text(out / "saes.js", js_call("saes", listing))
    return write_text(out / "index.html", _asset("saes.html"))


def render_saved(out: str | os.PathLike) -> Path:
    """Redraw the site in ``out`` from the feature data stored there (no model, no SAE)."""
    out = Path(out)
    folders = sorted(p.parent for p in out.glob("*/features.json"))
    if not folders:
        raise FileNotFoundError(
            f"{out} holds no */features.json; write a dashboard there first "
            "(gemma-scope features --sae ... --out DIR)"
        )
    datas = [load_features(f) for f in folders]
    return write_dashboard(datas, out, save_data=False, slugs=[f.name for f in folders])
