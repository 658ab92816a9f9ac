"""Build ``gemma_scope_ext/pretrained/data/catalog{,2}.json`` from SAELens's bundled ``pretrained_saes.yaml``.

SAELens's yaml is the only offline list of released Gemma Scope ids. ``catalog.json`` keeps the Gemma
Scope 1 (Gemma 2) releases and, for each id, records what the path says (layer, width, average L0), the site
(from the repo name), the model, the Neuronpedia id and whether it is its site's canonical SAE.

Decisions recorded here rather than copied from the yaml:
  * Average L0 comes from the path; the yaml's ``l0`` field disagrees once
    (gemma-scope-9b-pt-res-canonical layer_20/width_524k says 78, its path says 48) and is missing
    for the embedding SAEs.
  * The model comes from the repo name: gemma-scope-9b-it-res was trained on gemma-2-9b-it (the
    yaml says gemma-2-9b for the release and gemma-2-9b-it for its canonical aliases).
  * Canonical: L0 closest to 100 at each (site, layer, width); on a tie, SAELens's alias decides
    (it breaks the two ties in 9b-pt-att differently from each other).
  * An SAE without its own Neuronpedia id takes the id of the canonical alias that points at it.

``catalog2.json`` keeps every Gemma Scope 2 (Gemma 3) release and, for each id, what its folder
says (site, layer, width, L0 label, affine skip connection), the average L0 the yaml records, the
model and the Neuronpedia id the yaml gives (it gives one for 222 ids; none is derived by pattern,
since Neuronpedia hosts one L0 variant per site and the yaml is the only record of which).
The yaml's model for each release is checked against the one its repo name implies.

Run ``make catalog`` (under a second); the output is committed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections import defaultdict
from importlib.resources import files
from pathlib import Path

import sae_lens
import yaml

from gemma_scope_ext.models.gemma2 import GEMMA2_MODELS
from gemma_scope_ext.pretrained.catalog import CANONICAL_L0, WIDTHS, parse_sae_path
from gemma_scope_ext.pretrained.gemma3_shapes import GEMMA3_MODELS
from gemma_scope_ext.pretrained.scope2 import parse_scope2_path

OUT = Path(__file__).resolve().parents[1] / "gemma_scope_ext" / "pretrained" / "data" / "catalog.json"
RELEASE = re.compile(r"^gemma-scope-(2b|9b|27b)-(pt|it)-(res|mlp|att|transcoders)(-canonical)?$")
SITE_OF_REPO = {"res": "res", "mlp": "mlp", "att": "att", "transcoders": "transcoder"}
COLUMNS = ["sae_id", "path", "site", "layer", "width", "l0", "neuronpedia_id", "canonical"]
OUT2 = OUT.with_name("catalog2.json")
RELEASE2 = re.compile(r"^gemma-scope-2-(270m|1b|4b|12b|27b)-(pt|it)-(res|mlp|att|transcoders)(-all)?$")
COLUMNS2 = [*COLUMNS, "l0_label", "skip"]


def _model(size: str, variant: str) -> str:
    name = f"gemma-2-{size}" + ("-it" if variant == "it" else "")
    if name not in GEMMA2_MODELS:
        raise ValueError(
            f"release for unknown model {name!r}; expected one of {list(GEMMA2_MODELS)}"
        )
    return name


def _row(sae_id: str, path: str, repo_site: str, neuronpedia: str | None) -> dict:
    layer, width_label, l0 = parse_sae_path(path)
    site = "embedding" if layer is None else repo_site
    return {
        "sae_id": sae_id, "path": path, "site": site, "layer": layer,
        "width": WIDTHS[width_label], "l0": l0, "neuronpedia_id": neuronpedia, "canonical": False,
    }  # fmt: skip


def _canonical_paths(rows: list[dict], aliases: dict[str, str]) -> set[str]:
    """Paths of the canonical SAEs: L0 nearest 100 per (site, layer, width); ties go to SAELens."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["site"], r["layer"], r["width"])].append(r)
    picks = set()
    for group in groups.values():
        best = min(abs(r["l0"] - CANONICAL_L0) for r in group)
        tied = sorted(
            (r for r in group if abs(r["l0"] - CANONICAL_L0) == best), key=lambda r: r["l0"]
        )
        by_sae_lens = [r for r in tied if r["path"] in aliases.values()]
        picks.add((by_sae_lens or tied)[0]["path"])
    return picks


def build(yaml_path: Path) -> dict:
    with open(yaml_path) as f:
        data = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    bases = {k: v for k, v in data.items() if (m := RELEASE.match(k)) and not m.group(4)}
    releases = {}
    for name, raw in sorted(bases.items()):
        size, variant, repo_site, _ = RELEASE.match(name).groups()
        if raw["repo_id"] != f"google/{name}":
            raise ValueError(f"{name}: repo_id {raw['repo_id']!r}, expected google/{name}")
        model = _model(size, variant)
        rows = [
            _row(s["id"], s["path"], SITE_OF_REPO[repo_site], s.get("neuronpedia"))
            for s in raw["saes"]
        ]
        for r in rows:
            if r["sae_id"] != r["path"]:
                raise ValueError(f"{name}: id {r['sae_id']!r} differs from its path {r['path']!r}")
        alias_raw = data.get(f"{name}-canonical", {"saes": []})
        aliases = {s["id"]: s["path"] for s in alias_raw["saes"]}
        picks = _canonical_paths(rows, aliases)
        by_path = {r["path"]: r for r in rows}
        alias_rows = []
        for s in alias_raw["saes"]:
            if s["path"] not in by_path:
                raise ValueError(f"{name}-canonical: {s['id']} points at unknown {s['path']}")
            target = by_path[s["path"]]
            if target["neuronpedia_id"] is None:
                target["neuronpedia_id"] = s.get("neuronpedia")
            alias_rows.append({**target, "sae_id": s["id"], "neuronpedia_id": s.get("neuronpedia")})
        for r in [*rows, *alias_rows]:
            r["canonical"] = r["path"] in picks
        kind = "transcoder" if repo_site == "transcoders" else "sae"
        releases[name] = {
            "repo_id": raw["repo_id"],
            "model": model,
            "kind": kind,
            "alias_of": None,
            "rows": rows,
        }
        if alias_rows:
            releases[f"{name}-canonical"] = {
                "repo_id": raw["repo_id"],
                "model": model,
                "kind": kind,
                "alias_of": name,
                "rows": alias_rows,
            }
    return releases


def _model3(size: str, variant: str) -> str:
    # Hugging Face names the base 270m model without the -pt suffix the other sizes carry.
    name = f"gemma-3-{size}-{variant}".replace("270m-pt", "270m")
    if name not in GEMMA3_MODELS:
        raise ValueError(f"release for unknown model {name!r}; expected one of {GEMMA3_MODELS}")
    return name


def build2(yaml_path: Path) -> dict:
    """The Gemma Scope 2 releases, one row per id, every field checked against the folder name."""
    with open(yaml_path) as f:
        data = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    releases = {}
    for name, raw in sorted(data.items()):
        if not name.startswith("gemma-scope-2-"):
            continue
        m = RELEASE2.match(name)
        if m is None:
            raise ValueError(f"unexpected Gemma Scope 2 release name {name!r}")
        size, variant, repo_site, every = m.groups()
        model = _model3(size, variant)
        if raw["repo_id"] != f"google/gemma-scope-2-{size}-{variant}":
            raise ValueError(f"{name}: repo_id {raw['repo_id']!r}, expected google/gemma-scope-2-{size}-{variant}")
        if raw["model"] != f"google/{model}":
            raise ValueError(f"{name}: model {raw['model']!r}, expected google/{model}")
        rows = []
        for s in raw["saes"]:
            p = parse_scope2_path(s["path"])
            if p.site != SITE_OF_REPO[repo_site] or p.all_layers != bool(every):
                raise ValueError(f"{name}: folder {s['path']!r} does not belong to this release")
            if s["id"] not in (s["path"], s["path"].partition("/")[2]):
                raise ValueError(f"{name}: id {s['id']!r} is not its folder {s['path']!r}")
            rows.append({
                "sae_id": s["id"], "path": s["path"], "site": p.site, "layer": p.layer,
                "width": WIDTHS[p.width_label], "l0": int(s["l0"]),
                "neuronpedia_id": s.get("neuronpedia"), "canonical": False,
                "l0_label": p.l0_label, "skip": p.skip,
            })  # fmt: skip
        releases[name] = {
            "repo_id": raw["repo_id"], "model": model,
            "kind": "transcoder" if repo_site == "transcoders" else "sae", "alias_of": None,
            "rows": rows,
        }  # fmt: skip
    return releases


def dump(releases: dict, source: str, columns: list[str] = COLUMNS) -> str:
    """JSON with one SAE per line, so regenerating gives a readable diff."""
    out = ["{", f'  "source": {json.dumps(source)},', '  "releases": {']
    for i, (name, rel) in enumerate(releases.items()):
        head = {k: v for k, v in rel.items() if k != "rows"}
        out.append(f"    {json.dumps(name)}: {{")
        for k, v in head.items():
            out.append(f"      {json.dumps(k)}: {json.dumps(v)},")
        out.append(f'      "columns": {json.dumps(columns)},')
        out.append('      "saes": [')
        rows = [json.dumps([r[c] for c in columns]) for r in rel["rows"]]
        out.extend(f"        {row}{',' if j < len(rows) - 1 else ''}" for j, row in enumerate(rows))
        out.append("      ]")
        out.append("    }" + ("," if i < len(releases) - 1 else ""))
    out += ["  }", "}", ""]
    return "\n".join(out)


def _write(out: Path, releases: dict, columns: list[str]) -> None:
    text = dump(releases, f"sae_lens {sae_lens.__version__} pretrained_saes.yaml", columns)
    json.loads(text)  # the hand-built layout must stay valid JSON
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".catalog-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the package data is read by everyone
    os.replace(tmp, out)
    n = sum(len(r["rows"]) for r in releases.values())
    print(f"wrote {out}: {len(releases)} releases, {n} ids", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--out2", type=Path, default=OUT2)
    args = parser.parse_args(argv)
    yaml_path = Path(str(files("sae_lens").joinpath("pretrained_saes.yaml")))
    _write(args.out, build(yaml_path), COLUMNS)
    _write(args.out2, build2(yaml_path), COLUMNS2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
