"""circuit-tracer's graph JSON: field names and id formats as its viewer reads them, files that load
back into the same graph, files that circuit-tracer itself writes, and the HTML view."""

from __future__ import annotations

import json
import re

import pytest
import torch

from gemma_scope_ext.circuits.feature_graph import FeatureGraph
from gemma_scope_ext.circuits.nodes import GraphNode

pytestmark = pytest.mark.usefixtures("one_thread")

# circuit-tracer 0.5.0's frontend models (frontend/graph_models.py), field for field.
METADATA = {"slug", "scan", "transcoder_list", "prompt_tokens", "prompt", "node_threshold",
            "schema_version"}
QPARAMS = {"pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"}
NODE = {"node_id", "feature", "layer", "ctx_idx", "feature_type", "token_prob", "is_target_logit",
        "run_idx", "reverse_ctx_idx", "jsNodeId", "clerp", "influence", "activation"}
LINK = {"source", "target", "weight"}


def _same(a: FeatureGraph, b: FeatureGraph) -> None:
    assert a.nodes == b.nodes
    assert torch.equal(a.weights, b.weights)
    assert (a.tokens, a.token_strings, a.info) == (b.tokens, b.token_strings, b.info)
    assert torch.equal(a.cumulative_influence(), b.cumulative_influence())


def test_field_names_and_id_formats(small_graph):
    data = small_graph.prune(0.8, 0.98).to_dict("tiny")
    assert set(data) == {"metadata", "qParams", "nodes", "links"}
    assert METADATA <= set(data["metadata"]) and data["metadata"]["schema_version"] == 1
    assert set(data["qParams"]) == QPARAMS
    assert all(NODE <= set(n) for n in data["nodes"])
    assert all(set(link) == LINK for link in data["links"])
    n_layers = small_graph.info.n_layers
    patterns = {"cross layer transcoder": r"\d+_\d+_\d+",
                "mlp reconstruction error": r"0_\d+_\d+(-err)?", "res reconstruction error": r"res_\d+_\d+", "embedding": r"E_\d+_\d+",
                "logit": rf"{n_layers + 1}_\d+_\d+"}
    seen = set()
    for node in data["nodes"]:
        assert re.fullmatch(patterns[node["feature_type"]], node["node_id"]), node
        seen.add(node["feature_type"])
        if node["feature_type"] == "embedding":
            tok, pos = map(int, node["node_id"].split("_")[1:])
            assert (tok, node["layer"]) == (small_graph.tokens[pos], "E")
        if node["feature_type"] == "logit":
            assert node["layer"] == str(n_layers + 1) and "(p=" in node["clerp"]
    assert seen == set(patterns)
    assert [n["is_target_logit"] for n in data["nodes"]].count(True) == 1
    ids = [n["node_id"] for n in data["nodes"]]
    assert len(set(ids)) == len(ids)
    assert {link["source"] for link in data["links"]} | {link["target"] for link in data["links"]} \
        <= set(ids)


def test_transcoder_ids_are_circuit_tracers_and_shared_layers_are_offset(small_graph):
    data = small_graph.to_dict()
    by_id = {n["node_id"]: n for n in data["nodes"]}
    for node in small_graph.nodes:
        if node.kind == "feature" and node.site == "transcoder":
            ours = by_id[f"{node.layer}_{node.feature}_{node.position}"]
            f, layer = node.feature, node.layer
            assert ours["feature"] == (layer + f) * (layer + f + 1) // 2 + f  # Cantor pairing
            assert ours["ctx_idx"] == node.position and ours["activation"] == node.activation
    # The residual SAE shares no layer with a transcoder here: no offsets needed.
    assert set(data["metadata"]["gemma_scope"]["offsets"].values()) == {0}
    node = GraphNode
    shared = (node("feature", "transcoder", 1, 0, 3, 1.0), node("feature", "res", 1, 0, 3, 2.0),
              node("logit", "logit", None, 0, 5, 1.0, 1.0))
    adj = torch.zeros(3, 3)
    adj[2, 0], adj[2, 1], adj[1, 0] = 1.0, 2.0, 0.5
    graph = FeatureGraph.from_adjacency(shared, adj, (5,))
    ids = [n["node_id"] for n in graph.to_dict()["nodes"]]
    # Two layers inferred, so logits sit at layer 3; res features are numbered after the 4
    # transcoder features seen at layer 1.
    assert ids == ["1_3_0", "1_7_0", "3_5_0"]
    _same(FeatureGraph.from_dict(graph.to_dict()), graph)


def test_a_graph_file_loads_back_into_the_same_graph(small_graph, tmp_path):
    for graph in (small_graph, small_graph.prune(0.8, 0.98)):
        path = graph.to_json(tmp_path / "g.json")
        loaded = FeatureGraph.from_json(path)
        _same(loaded, graph)
        assert loaded.to_dict("g") == graph.to_dict("g") == json.loads(path.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.json"]  # nothing left behind


def test_a_file_written_by_circuit_tracer_loads(small_graph):
    """Strip every field circuit-tracer does not write: nodes come back from its own fields."""
    pruned = small_graph.prune(0.8, 0.98)
    graph = FeatureGraph.from_adjacency(
        tuple(n for n in pruned.nodes), pruned.adjacency, pruned.tokens)
    # circuit-tracer has no residual-SAE nodes: keep only its kinds.
    keep = [i for i, n in enumerate(graph.nodes) if n.site in ("transcoder", "embedding", "logit")]
    graph = FeatureGraph.from_adjacency(tuple(graph.nodes[i] for i in keep),
                                        graph.adjacency[keep][:, keep], graph.tokens)
    data = graph.to_dict()
    del data["metadata"]["gemma_scope"]
    for n in data["nodes"]:
        del n["gemma_scope"]
        if n["feature_type"] == "logit":
            n["influence"] = n["activation"] = None
    loaded = FeatureGraph.from_dict(json.loads(json.dumps(data)))
    expect = [n._replace(activation=0.0) if n.is_target else n for n in graph.nodes]
    assert [n._replace(label="") for n in loaded.nodes] == [n._replace(label="") for n in expect]
    assert [n.label for n in loaded.nodes if n.is_target] == [n.label for n in graph.nodes
                                                              if n.is_target]
    assert torch.equal(loaded.weights, graph.weights) and loaded.tokens == graph.tokens
    with pytest.raises(ValueError, match="not a circuit-tracer graph file"):
        FeatureGraph.from_dict({"nodes": []})


def test_html_view_is_self_contained(small_graph, tmp_path):
    pruned = small_graph.prune(0.8, 0.98)
    page = pruned.to_html(tmp_path / "view.html").read_text()
    embedded = re.search(r'<script type="application/json" id="graph-data">(.*?)</script>', page,
                         re.S).group(1)
    assert json.loads(embedded) == pruned.to_dict("view")
    # Nothing fetched: no external scripts, styles, images or URLs (the SVG namespace is a name).
    assert not re.search(r"<script[^>]+src=|<link|@import|url\(|https://", page)
    assert set(re.findall(r"http://[^'\"\s]+", page)) <= {"http://www.w3.org/2000/svg"}
    assert "getElementById('graph-data')" in page
