"""A self-contained HTML page for one attribution graph: no server, nothing fetched.

The page embeds the graph JSON (circuit-tracer's format) and a small script that draws it as SVG:
token positions left to right, the embedding row at the bottom, then each layer, then the targets;
edges blue (positive) or red (negative), thicker and darker as |weight| grows. Hovering shows a
node's fields, clicking keeps only its edges and lists its strongest inputs and outputs, and a
slider hides weak edges. Open the file in any browser, offline.
"""

from __future__ import annotations

import html
import json
from importlib import resources

__all__ = ["html_page"]

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
{css}
</style>
</head>
<body>
<header>
<h1>{title}</h1>
<span class="prompt">{prompt}</span>
<span id="counts"></span>
<span>{scores}</span>
<label>hide edges under <input id="minw" type="range" min="0" max="100" value="0"> % of the
largest</label>
</header>
<main><div id="plot"></div><div id="side"></div></main>
<div id="tip"></div>
<script type="application/json" id="graph-data">{data}</script>
<script>
{js}
</script>
</body>
</html>
"""


def _asset(name: str) -> str:
    return resources.files("gemma_scope_ext.circuits").joinpath("data", name).read_text("utf-8")


def html_page(data: dict, title: str = "attribution graph") -> str:
    """The page for a graph JSON dict (``FeatureGraph.to_dict()``)."""
    for key in ("metadata", "nodes", "links"):
        if key not in data:
            raise ValueError(f"graph data has no {key!r}; pass FeatureGraph.to_dict()")
    meta = data["metadata"]
    scores = (meta.get("gemma_scope") or {}).get("scores")
    score_text = "" if not scores else (
        f"replacement {scores['replacement']:.3f}, completeness {scores['completeness']:.3f}")
    # "</" inside the JSON would end the script element early; "<\/" is the same JSON string.
    payload = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    return _TEMPLATE.format(title=html.escape(title), css=_asset("graph_view.css"),
                            prompt=html.escape(repr(meta.get("prompt", ""))),
                            scores=html.escape(score_text), data=payload,
                            js=_asset("graph_view.js"))
