"""The Gemma Scope 2 catalog against SAELens's bundled yaml, and queries across both generations."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest
import sae_lens
import yaml

import gemma_scope_cli
from gemma_scope_ext.pretrained.catalog import (
    all_entries,
    expected_shapes,
    get_entry,
    list_releases,
)
from gemma_scope_ext.pretrained.gemma3_shapes import gemma3_spec
from gemma_scope_ext.pretrained.query import find_saes, why_empty
from gemma_scope_ext.pretrained.scope2 import parse_scope2_path

ROOT = Path(__file__).resolve().parents[2]
YAML = Path(sae_lens.__file__).parent / "pretrained_saes.yaml"


@pytest.fixture(scope="module")
def scope2_yaml() -> dict:
    with open(YAML) as f:
        data = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return {k: v for k, v in data.items() if k.startswith("gemma-scope-2-")}


def _tool():
    spec = importlib.util.spec_from_file_location("make_catalog", ROOT / "tools" / "make_catalog.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_every_yaml_id_is_in_the_catalog_with_its_folder_l0_and_neuronpedia_id(scope2_yaml):
    releases = {r.name: r for r in list_releases() if r.generation == 2}
    assert set(releases) == set(scope2_yaml) and len(releases) == 75
    for name, raw in scope2_yaml.items():
        ours = {e.sae_id: e for e in all_entries(generation=2) if e.release == name}
        assert releases[name].n_saes == len(raw["saes"]) == len(ours), name
        assert releases[name].repo_id == raw["repo_id"]
        for s in raw["saes"]:
            e = ours[s["id"]]
            assert (e.path, e.l0, e.neuronpedia_id) == (s["path"], s["l0"], s.get("neuronpedia"))
            assert f"google/{e.model}" == raw["model"]
    kinds = Counter(e.release.split("-pt-")[-1].split("-it-")[-1] for e in all_entries(generation=2))
    # SAELens 6.54.12: 8,784 ids; res 520, res-all 1,504, mlp 348, mlp-all 1,256, att 324,
    # att-all 1,256, transcoders 578, transcoders-all 2,998.
    assert kinds == {"res": 520, "res-all": 1504, "mlp": 348, "mlp-all": 1256, "att": 324,
                     "att-all": 1256, "transcoders": 578, "transcoders-all": 2998}  # fmt: skip
    assert sum(kinds.values()) == 8784
    assert sum(e.neuronpedia_id is not None for e in all_entries(generation=2)) == 222


def test_entries_say_what_their_folders_say():
    tc = get_entry("gemma-scope-2-1b-pt-transcoders", "transcoder/layer_13_width_16k_l0_big_affine")
    assert (tc.site, tc.layer, tc.width, tc.l0_label, tc.skip, tc.generation) == (
        "transcoder", 13, 16384, "big", True, 2)  # fmt: skip
    assert tc.filename == "transcoder/layer_13_width_16k_l0_big_affine/params.safetensors"
    assert (tc.hook_name, tc.hook_name_out) == ("blocks.13.mlp.hook_in", "blocks.13.hook_mlp_out")
    assert expected_shapes(tc)["W_skip"] == (1152, 1152)  # gemma-3-1b: d_model 1152
    plain = get_entry("gemma-scope-2-1b-pt-transcoders", "transcoder/layer_13_width_16k_l0_big")
    assert not plain.skip and "W_skip" not in expected_shapes(plain)
    att = get_entry("gemma-scope-2-4b-it-att", "layer_17_width_16k_l0_big")
    assert (att.hook_name, att.d_in, att.model) == ("blocks.17.attn.hook_z", 8 * 256, "gemma-3-4b-it")
    res = get_entry("gemma-scope-2-270m-pt-res", "layer_12_width_16k_l0_medium")
    assert (res.hook_name, res.d_in, res.neuronpedia_id) == (
        "blocks.12.hook_resid_post", 640, "gemma-3-270m/12-gemmascope-2-res-16k")  # fmt: skip
    # Gemma Scope 1 entries keep their own layout (negative control for the generation switch).
    g1 = get_entry("gemma-scope-2b-pt-transcoders", "layer_7/width_16k/average_l0_70")
    assert (g1.generation, g1.filename, g1.hook_name) == (
        1, "layer_7/width_16k/average_l0_70/params.npz", "blocks.7.ln2.hook_normalized")  # fmt: skip


def test_model_shapes_are_transformer_lens_gemma3_configs():
    # d_model, n_layers, n_heads x d_head of each size, as TransformerLens 3.9 hard-codes them.
    sizes = {"gemma-3-270m": (640, 18, 4, 256), "gemma-3-1b-pt": (1152, 26, 4, 256),
             "gemma-3-4b-it": (2560, 34, 8, 256), "gemma-3-12b-pt": (3840, 48, 16, 256),
             "gemma-3-27b-it": (5376, 62, 32, 128)}  # fmt: skip
    for model, want in sizes.items():
        s = gemma3_spec(model)
        assert (s.d_model, s.n_layers, s.n_heads, s.d_head) == want
        # Every layer of every model has an SAE in the every-layer sweeps, and none past the last.
        layers = {e.layer for e in all_entries(generation=2) if e.model == model}
        assert layers == set(range(s.n_layers)), model
    with pytest.raises(ValueError, match="unknown Gemma 3 model 'gemma-3-2b'"):
        gemma3_spec("gemma-3-2b")


@pytest.mark.parametrize("path, parsed", [
    ("resid_post/layer_12_width_16k_l0_medium", ("res", False, 12, "16k", "medium", False, None)),
    ("transcoder_all/layer_0_width_262k_l0_small_affine",
     ("transcoder", True, 0, "262k", "small", True, None)),
    ("resid_post/layer_9_width_16k_l0_medium_seed_1", ("res", False, 9, "16k", "medium", False, 1)),
    ("attn_out/layer_3_width_1m_l0_big", ("att", False, 3, "1m", "big", False, None)),
])  # fmt: skip
def test_folder_names_parse(path, parsed):
    assert tuple(parse_scope2_path(path)) == parsed


@pytest.mark.parametrize("path", [
    "resid_post/layer_12_width_17k_l0_medium", "resid_post/layer_12_width_16k_l0_huge",
    "resid_post/layer_12_width_16k_l0_small_affine", "resid/layer_12_width_16k_l0_small",
    "layer_20/width_16k/average_l0_71",
])  # fmt: skip
def test_other_folder_names_are_refused(path):
    with pytest.raises(ValueError, match="not a Gemma Scope 2 folder"):
        parse_scope2_path(path)


def test_committed_catalog2_is_what_the_tool_generates(scope2_yaml, tmp_path):
    tool = _tool()
    text = tool.dump(tool.build2(YAML), f"sae_lens {sae_lens.__version__} pretrained_saes.yaml",
                     tool.COLUMNS2)  # fmt: skip
    assert text == (ROOT / "gemma_scope_ext" / "pretrained" / "data" / "catalog2.json").read_text()
    # The tool refuses an id filed under the wrong release (negative control for its checks).
    bad = {"gemma-scope-2-1b-pt-res": {**scope2_yaml["gemma-scope-2-1b-pt-res"]}}
    bad["gemma-scope-2-1b-pt-res"]["saes"] = [
        {"id": "layer_1_width_16k_l0_small", "path": "mlp_out/layer_1_width_16k_l0_small", "l0": 20}
    ]
    planted = tmp_path / "planted.yaml"
    planted.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="does not belong to this release"):
        tool.build2(planted)


def test_find_saes_by_generation_and_skip():
    both = find_saes(site="transcoder", layer=13, width="16k")
    first, second = find_saes(site="transcoder", layer=13, width="16k", generation=1), find_saes(
        site="transcoder", layer=13, width="16k", generation=2)  # fmt: skip
    assert {e.generation for e in first} == {1} and {e.generation for e in second} == {2}
    assert len(both) == len(first) + len(second) and len(first) == 1
    skip = find_saes(model="gemma-3-1b-pt", site="transcoder", layer=13, width="16k", skip=True)
    assert skip and all(e.skip and e.path.endswith("_affine") for e in skip)
    noskip = find_saes(model="gemma-3-1b-pt", site="transcoder", layer=13, width="16k", skip=False)
    assert noskip and not any(e.skip for e in noskip)
    assert len(skip) + len(noskip) == len(
        find_saes(model="gemma-3-1b-pt", site="transcoder", layer=13, width="16k"))  # fmt: skip
    # The nearest L0 per (release, site, layer, width, skip): both kinds of transcoder are kept.
    near = find_saes(model="gemma-3-1b-pt", site="transcoder", layer=13, width="16k", l0=60,
                     release="gemma-scope-2-1b-pt-transcoders")  # fmt: skip
    assert [(e.l0_label, e.skip) for e in near] == [("medium", False), ("medium", True)]
    with pytest.raises(ValueError, match="unknown model 'gemma-2-2b'"):
        find_saes(model="gemma-2-2b", generation=2)
    with pytest.raises(ValueError, match="layer 62 is impossible: gemma-3-27b-pt has 62 layers"):
        find_saes(model="gemma-3-27b-pt", layer=62)
    assert find_saes(model="gemma-3-27b-pt", layer=61, site="res", width="16k")  # last block
    with pytest.raises(ValueError, match="generation must be 1 .* or None"):
        find_saes(generation=3)
    assert why_empty(model="gemma-3-27b-pt", site="mlp", generation=2) == (
        "no SAE has site mlp among model=gemma-3-27b-pt; there: res, transcoder")


def test_cli_lists_gemma_scope_2(capsys):
    assert gemma_scope_cli.main(["list", "--generation", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 75 and all(line.split()[1] == "2" for line in lines[2:])
    assert gemma_scope_cli.main(["list", "--model", "gemma-3-270m", "--site", "res", "--layer",
                                 "12", "--width", "16k"]) == 0  # fmt: skip
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    medium = [r for r in rows if r[1] == "layer_12_width_16k_l0_medium"]
    assert medium == [["gemma-scope-2-270m-pt-res", "layer_12_width_16k_l0_medium", "res", "12",
                       "16k", "60", "(medium)", "gemma-3-270m/12-gemmascope-2-res-16k"]]  # fmt: skip
    assert gemma_scope_cli.main(["list", "--model", "gemma-3-1b-it", "--site", "transcoder",
                                 "--layer", "5", "--width", "16k", "--skip", "yes"]) == 0  # fmt: skip
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows and all(r[1].endswith("_affine") and "yes" in r for r in rows)
