"""``gemma-scope graph`` offline on the tiny model: the files it writes hold the graph the Python
API builds, pruned; bad input fails before any work."""

from __future__ import annotations

import json

import pytest
import torch

import gemma_scope_cli
from gemma_scope_ext.circuits.feature_graph import FeatureGraph
from gemma_scope_ext.circuits.graph import feature_graph
from tests.helpers.random_saes import random_jumprelu

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "Return the number of items"


@pytest.fixture(scope="module")
def saved(tiny_model, tmp_path_factory):
    tokens = tiny_model.to_tokens(PROMPT)
    _, cache = tiny_model.run_with_cache(tokens)
    root = tmp_path_factory.mktemp("transcoders")
    saes, folders = [], []
    for layer in (0, 2):
        sae = random_jumprelu(cache, f"blocks.{layer}.ln2.hook_normalized", d_sae=32,
                              hook_out=f"blocks.{layer}.hook_mlp_out", seed=layer)
        sae.save_model(str(root / f"tc{layer}"))
        saes.append(sae)
        folders.append(str(root / f"tc{layer}"))
    return tokens, saes, folders


def test_graph_command_writes_the_pruned_graph(tiny_model, saved, tmp_path, capsys):
    tokens, saes, folders = saved
    out = tmp_path / "graphs"
    rc = gemma_scope_cli.main(["graph", "--prompt", PROMPT, "--transcoders", *folders,
                               "--out", str(out), "--slug", "items", "--max-n-logits", "3",
                               "--max-feature-nodes", "40", "--quiet"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["graph-metadata.json", "items.html",
                                                     "items.json"]
    expected = feature_graph(tiny_model, saes, tokens, progress=False, max_n_logits=3,
                             max_feature_nodes=40)
    pruned = expected.prune(0.8, 0.98)
    loaded = FeatureGraph.from_json(out / "items.json")
    assert loaded.nodes == pruned.nodes
    torch.testing.assert_close(loaded.weights, pruned.weights)
    data = json.loads((out / "items.json").read_text())
    scores = expected.scores()
    assert data["metadata"]["gemma_scope"]["scores"] == pytest.approx(scores._asdict())
    assert json.loads((out / "graph-metadata.json").read_text())["graphs"][0]["slug"] == "items"
    printed = capsys.readouterr().out
    assert f"replacement score {scores.replacement:.4f}" in printed


def test_graph_command_rejects_bad_input_early(saved, tmp_path, capsys):
    _, _, folders = saved
    rc = gemma_scope_cli.main(["graph", "--prompt", PROMPT, "--transcoders", *folders,
                               "--out", str(tmp_path), "--node-threshold", "1.5"])
    assert rc == 2 and "--node-threshold" in capsys.readouterr().err
    rc = gemma_scope_cli.main(["graph", "--prompt", PROMPT, "--transcoders", "no/such/dir",
                               "--out", str(tmp_path), "--quiet"])
    assert rc == 2 and "neither a folder nor RELEASE:SAE_ID" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
