"""circuit-tracer's graph JSON, which its web viewer opens: ``metadata``, ``qParams``, ``nodes``,
``links``.

Node ids follow circuit-tracer: features ``L_feat_pos``, MLP-side errors (transcoder, MLP SAE, or
an MLP no SAE replaces) ``0_L_pos``, tokens ``E_tok_pos``, logits ``(nL+1)_tok_pos``; custom targets
and metrics take virtual token ids from d_vocab up, as circuit-tracer's custom targets do. An error
id ``0_L_pos`` is also the id of layer 0's feature L at pos; where both nodes exist (circuit-tracer
would then write one id twice) the error's id is ``0_L_pos-err``. What
circuit-tracer has no id for: errors of attention and residual SAEs are ``att_L_pos`` /
``res_L_pos``; when several SAEs share a layer, the features of all but the MLP-side one are
numbered after it (``feature + offset``, the offsets in ``metadata.gemma_scope.offsets``), so every
id stays unique and in the viewer's layer row. Embedding-SAE nodes sit in the viewer's ``E`` row.

Every node also carries ``gemma_scope``: the ``GraphNode`` fields, so a file written here loads back
into the same graph; files from circuit-tracer itself load from their own fields.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import torch
from torch import Tensor

from gemma_scope_ext.circuits.nodes import GraphInfo, GraphNode, SiteInfo

__all__ = ["GraphParts", "from_circuit_tracer", "node_ids", "to_circuit_tracer"]

SCHEMA_VERSION = 1
_MLP_SIDE = ("transcoder", "mlp")


class GraphParts(NamedTuple):
    """What a graph file holds."""

    nodes: tuple[GraphNode, ...]
    adjacency: Tensor
    tokens: tuple[int, ...]
    token_strings: tuple[str, ...]
    info: GraphInfo | None
    cumulative: Tensor


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def _offsets(nodes: tuple[GraphNode, ...], info: GraphInfo | None) -> dict[str, int]:
    """Feature-number offset of each (site, layer) that shares its layer with an earlier site."""
    width: dict[tuple[str, int | None], int] = {}
    for n in nodes:
        if n.kind == "feature":
            key = (n.site, n.layer)
            width[key] = max(width.get(key, 0), (n.feature or 0) + 1)
    for s in info.sites if info else ():
        width[(s.site, s.layer)] = s.d_sae
    by_layer: dict[int | None, list[tuple[str, int | None]]] = {}
    for key in width:
        by_layer.setdefault(key[1], []).append(key)
    offsets = {}
    for keys in by_layer.values():
        keys.sort(key=lambda k: (k[0] not in _MLP_SIDE, k[0]))
        start = 0
        for key in keys:
            offsets[f"{key[0]}.{key[1]}"] = start
            start += width[key]
    return offsets


def node_ids(nodes: tuple[GraphNode, ...], n_layers: int, offsets: dict[str, int]) -> list[dict]:
    """circuit-tracer's node fields (without influence) for each node."""
    out = []
    first_target = next((i for i, n in enumerate(nodes) if n.is_target), None)
    for i, n in enumerate(nodes):
        pos = n.position if n.position is not None else 0
        if n.is_target:
            layer = str(n_layers + 1)
            d = dict(node_id=f"{layer}_{n.feature}_{pos}", feature=n.feature, layer=layer,
                     feature_type="logit", token_prob=n.weight, is_target_logit=i == first_target,
                     jsNodeId=f"L_{n.feature}-{pos}",
                     clerp=f'Output "{n.label}" (p={n.weight:.3f})')
        elif n.kind == "embedding":
            tok = n.feature if n.feature is not None else -1
            d = dict(node_id=f"E_{tok}_{pos}", feature=pos, layer="E", feature_type="embedding",
                     jsNodeId=f"E_{tok}-{pos}")
        elif n.site == "embedding":
            tail = "err" if n.kind == "error" else f"f{n.feature}"
            d = dict(node_id=f"E_{tail}_{pos}", feature=-1 if n.kind == "error" else n.feature,
                     layer="E", feature_type=f"embedding sae {'error' if n.kind == 'error' else 'feature'}",
                     jsNodeId=f"E_{tail}-{pos}")
        elif n.kind == "feature":
            f = n.feature + offsets.get(f"{n.site}.{n.layer}", 0)
            d = dict(node_id=f"{n.layer}_{f}_{pos}", feature=_cantor(n.layer, f),
                     layer=str(n.layer), feature_type="cross layer transcoder",
                     jsNodeId=f"{n.layer}_{f}-0")
        else:
            mlp = n.site in _MLP_SIDE
            d = dict(node_id=f"{0 if mlp else n.site}_{n.layer}_{pos}", feature=-1,
                     layer=str(n.layer),
                     feature_type=f"{'mlp' if mlp else n.site} reconstruction error",
                     jsNodeId=f"{n.layer}_{pos}-0")
        d = {"node_id": d.pop("node_id"), "feature": d.pop("feature"), "layer": d.pop("layer"),
             "ctx_idx": pos, "feature_type": d.pop("feature_type"),
             "token_prob": d.pop("token_prob", 0.0), "is_target_logit": d.pop("is_target_logit",
                                                                             False),
             "run_idx": 0, "reverse_ctx_idx": 0, "jsNodeId": d.pop("jsNodeId"),
             "clerp": d.pop("clerp", ""), "activation": n.activation}
        out.append(d)
    return out


def to_circuit_tracer(nodes: tuple[GraphNode, ...], weights: Tensor, rows: Tensor,
                      tokens: tuple[int, ...], token_strings: tuple[str, ...],
                      info: GraphInfo | None, cumulative: list[float], slug: str,
                      scan: str | None = None, node_threshold: float | None = None) -> dict:
    """The graph JSON (see the module docstring)."""
    n_layers = info.n_layers if info else 1 + max((n.layer for n in nodes if n.layer is not None),
                                                  default=-1)
    offsets = _offsets(nodes, info)
    fields = node_ids(nodes, n_layers, offsets)
    features = {f["node_id"] for f, n in zip(fields, nodes, strict=True) if n.kind == "feature"}
    for f, n in zip(fields, nodes, strict=True):
        if n.kind == "error" and f["node_id"] in features:
            f["node_id"] += "-err"  # circuit-tracer's 0_L_pos is also layer 0's feature L at pos
    ids = [f["node_id"] for f in fields]
    if len(set(ids)) != len(ids):
        raise ValueError("two nodes would share an id in the graph file")
    for f, n, c in zip(fields, nodes, cumulative, strict=True):
        f["influence"] = c
        f["gemma_scope"] = list(n)
    r, s = torch.nonzero(weights, as_tuple=True)
    targets = rows[r].tolist()
    links = [{"source": ids[j], "target": ids[i], "weight": w}
             for i, j, w in zip(targets, s.tolist(), weights[r, s].tolist(), strict=True)]
    strings = list(token_strings) or [str(t) for t in tokens]
    metadata = {
        "slug": slug, "scan": scan or "gemma-scope-ext", "transcoder_list": [],
        "prompt_tokens": strings, "prompt": "".join(strings), "node_threshold": node_threshold,
        "schema_version": SCHEMA_VERSION,
        "gemma_scope": {"tokens": list(tokens), "offsets": offsets,
                        "info": None if info is None else [*info[:4], [list(s) for s in info.sites]]},
    }
    qparams = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": metadata, "qParams": qparams, "nodes": fields, "links": links}


_CLERP = re.compile(r'Output "(.*)" \(p=')


def _parse_node(d: dict) -> GraphNode:
    """A node from circuit-tracer's own fields (files it wrote)."""
    kind, pos, act = d["feature_type"], int(d["ctx_idx"]), float(d.get("activation") or 0.0)
    if kind == "logit":
        match = _CLERP.match(d.get("clerp", ""))
        return GraphNode("logit", "logit", None, pos, int(d["feature"]), act,
                         float(d.get("token_prob", 0.0)), match.group(1) if match else "")
    if kind == "embedding":
        return GraphNode("embedding", "embedding", None, pos, int(d["node_id"].split("_")[1]), act)
    if "error" in kind:
        return GraphNode("error", "transcoder", int(d["layer"]), pos, None, act)
    return GraphNode("feature", "transcoder", int(d["layer"]), pos,
                     int(d["node_id"].split("_")[1]), act)


def from_circuit_tracer(data: dict[str, Any]) -> GraphParts:
    """Nodes, a square adjacency and the prompt from a graph file."""
    missing = {"metadata", "nodes", "links"} - set(data)
    if missing:
        raise ValueError(f"not a circuit-tracer graph file: no {sorted(missing)}")
    raw = data["nodes"]
    nodes = [GraphNode(*d["gemma_scope"]) if "gemma_scope" in d else _parse_node(d) for d in raw]
    order = sorted(range(len(nodes)), key=lambda i: nodes[i].is_target)  # stable: targets last
    nodes = [nodes[i] for i in order]
    index = {raw[i]["node_id"]: k for k, i in enumerate(order)}
    adjacency = torch.zeros(len(nodes), len(nodes))
    for link in data["links"]:
        if link["source"] not in index or link["target"] not in index:
            raise ValueError(f"link {link['source']} -> {link['target']} names a missing node")
        adjacency[index[link["target"]], index[link["source"]]] = link["weight"]
    meta = data["metadata"]
    ours = meta.get("gemma_scope") or {}
    tokens = ours.get("tokens")
    if tokens is None:
        emb = sorted((n.position, n.feature) for n in nodes if n.kind == "embedding")
        tokens = [t for _, t in emb]
    info = ours.get("info")
    if info is not None:
        info = GraphInfo(*info[:4], tuple(SiteInfo(*s) for s in info[4]))
    # circuit-tracer leaves logit nodes' influence out; they have none, so rank last (share 1).
    inf = [raw[i].get("influence") for i in order]
    cumulative = torch.tensor([1.0 if v is None else v for v in inf], dtype=torch.float32)
    strings = tuple(meta.get("prompt_tokens") or ())
    if strings == tuple(str(t) for t in tokens):
        strings = ()
    return GraphParts(tuple(nodes), adjacency, tuple(tokens), strings, info, cumulative)


