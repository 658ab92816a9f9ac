"""Build ``gemma_scope_ext/pretrained/data/catalog.json`` from SAELens's bundled ``pretrained_saes.yaml``.

SAELens's yaml is the only offline list of released Gemma Scope ids. This keeps the Gemma Scope 1
(Gemma 2) releases and, for each id, records what the path says (layer, width, average L0), the site
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

OUT = Path(__file__).resolve().parents[1] / "gemma_scope_ext" / "pretrained" / "data" / "catalog.json"
RELEASE = re.compile(r"^gemma-scope-(2b|9b|27b)-(pt|it)-(res|mlp|att|transcoders)(-canonical)?$")
SITE_OF_REPO = {"res": "res", "mlp": "mlp", "att": "att", "transcoders": "transcoder"}
COLUMNS = ["sae_id", "path", "site", "layer", "width", "l0", "neuronpedia_id", "canonical"]


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


def dump(releases: dict, source: str) -> str:
    """JSON with one SAE per line, so regenerating gives a readable diff."""
    out = ["{", f'  "source": {json.dumps(source)},', '  "releases": {']
    for i, (name, rel) in enumerate(releases.items()):
        head = {k: v for k, v in rel.items() if k != "rows"}
        out.append(f"    {json.dumps(name)}: {{")
        for k, v in head.items():
            out.append(f"      {json.dumps(k)}: {json.dumps(v)},")
        out.append(f'      "columns": {json.dumps(COLUMNS)},')
        out.append('      "saes": [')
        rows = [json.dumps([r[c] for c in COLUMNS]) for r in rel["rows"]]
        out.extend(f"        {row}{',' if j < len(rows) - 1 else ''}" for j, row in enumerate(rows))
        out.append("      ]")
        out.append("    }" + ("," if i < len(releases) - 1 else ""))
    out += ["  }", "}", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    yaml_path = Path(str(files("sae_lens").joinpath("pretrained_saes.yaml")))
    releases = build(yaml_path)
    text = dump(releases, f"sae_lens {sae_lens.__version__} pretrained_saes.yaml")
    json.loads(text)  # the hand-built layout must stay valid JSON
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=".catalog-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, args.out)
    n = sum(len(r["rows"]) for r in releases.values())
    print(f"wrote {args.out}: {len(releases)} releases, {n} ids", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
