"""The catalog against the Gemma Scope release table and SAELens's bundled list of ids."""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from pathlib import Path

import pytest
from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

from gemma_scope_ext.models.sites import site_d_in
from gemma_scope_ext.pretrained import catalog
from gemma_scope_ext.pretrained.catalog import (
    UnknownSAEError,
    all_entries,
    get_entry,
    list_releases,
    parse_width,
)
from gemma_scope_ext.pretrained.query import find_saes
from gemma_scope_ext.pretrained.sae_lens_route import ROUTED_LOADERS, entry_for_path

ROOT = Path(__file__).resolve().parents[2]
K = 1024
ALL_2B, ALL_9B = list(range(26)), list(range(42))

# The Gemma Scope technical report's release table: (model, site) -> {width: layers}.
# The embedding SAEs (width 4k) sit in the 2B and 9B residual repos; layer None = hook_embed.
RELEASE_TABLE: dict[tuple[str, str], dict[int, list[int | None]]] = {
    ("gemma-2-2b", "att"): {16 * K: ALL_2B, 64 * K: ALL_2B},
    ("gemma-2-2b", "mlp"): {16 * K: ALL_2B, 64 * K: ALL_2B},
    ("gemma-2-2b", "res"): {16 * K: ALL_2B, 64 * K: ALL_2B, 2**15: [12], 2**17: [12],
                            2**18: [12], 2**19: [12], 2**20: [5, 12, 19]},
    ("gemma-2-2b", "embedding"): {4 * K: [None]},
    ("gemma-2-2b", "transcoder"): {16 * K: ALL_2B},
    ("gemma-2-9b", "att"): {16 * K: ALL_9B, 128 * K: ALL_9B},
    ("gemma-2-9b", "mlp"): {16 * K: ALL_9B, 128 * K: ALL_9B},
    ("gemma-2-9b", "res"): {16 * K: ALL_9B, 128 * K: ALL_9B, 2**15: [20], 2**16: [20],
                            2**18: [20], 2**19: [20], 2**20: [9, 20, 31]},
    ("gemma-2-9b", "embedding"): {4 * K: [None]},
    ("gemma-2-27b", "res"): {128 * K: [10, 22, 34]},
    ("gemma-2-9b-it", "res"): {16 * K: [9, 20, 31], 128 * K: [9, 20, 31]},
}  # fmt: skip

REPOS = {"2b-pt-res", "2b-pt-mlp", "2b-pt-att", "2b-pt-transcoders", "9b-pt-res", "9b-pt-mlp",
         "9b-pt-att", "27b-pt-res", "9b-it-res"}  # fmt: skip
TRANSCODER_L0 = [76, 65, 49, 54, 88, 87, 95, 70, 52, 72, 88, 5, 6, 8, 8, 8, 10, 12, 13, 12, 11, 13,
                 15, 25, 37, 41]  # fmt: skip


def test_releases_are_the_nine_repos_and_their_canonical_aliases():
    releases = {r.name: r for r in list_releases() if r.generation == 1}
    base = {n for n, r in releases.items() if r.alias_of is None}
    assert base == {f"gemma-scope-{r}" for r in REPOS}
    for name, r in releases.items():
        assert r.repo_id == f"google/{r.alias_of or name}"
        if r.alias_of:
            assert name == f"{r.alias_of}-canonical"
    # SAELens 6.54.12 lists 2,859 Gemma Scope 1 ids, canonical aliases included.
    assert sum(r.n_saes for r in releases.values()) == 2859


def test_every_site_width_layer_of_the_release_table_and_nothing_else():
    found: dict[tuple[str, str], dict[int, set]] = defaultdict(lambda: defaultdict(set))
    for e in all_entries(generation=1):
        found[(e.model, e.site)][e.width].add(e.layer)
    expected = {
        key: {w: set(layers) for w, layers in t.items()} for key, t in RELEASE_TABLE.items()
    }
    assert {k: dict(v) for k, v in found.items()} == expected


def test_entries_are_consistent_with_their_paths_and_the_model_spec():
    for e in all_entries(include_aliases=True, generation=1):
        layer = "embedding" if e.layer is None else f"layer_{e.layer}"
        width = {v: k for k, v in catalog.WIDTHS.items()}[e.width]
        assert e.path == f"{layer}/width_{width}/average_l0_{e.l0}"
        assert e.d_in == site_d_in(e.model, e.site)
        assert e.sae_id == (e.path if not e.release.endswith("-canonical")
                            else f"{layer}/width_{width}/canonical")  # fmt: skip
    att = get_entry("gemma-scope-9b-pt-att", "layer_20/width_16k/average_l0_39")
    assert (att.d_in, att.hook_name) == (16 * 256, "blocks.20.attn.hook_z")
    tc = get_entry("gemma-scope-2b-pt-transcoders", "layer_7/width_16k/average_l0_70")
    assert (tc.hook_name, tc.hook_name_out) == (
        "blocks.7.ln2.hook_normalized",
        "blocks.7.hook_mlp_out",
    )


def test_transcoders_one_per_layer_with_published_l0():
    tcs = find_saes(site="transcoder", generation=1)
    assert [e.layer for e in tcs] == ALL_2B
    assert [e.l0 for e in tcs] == TRANSCODER_L0
    assert all(e.canonical and e.kind == "transcoder" and e.neuronpedia_id for e in tcs)


def test_canonical_is_l0_nearest_100_and_matches_sae_lens_aliases():
    groups = defaultdict(list)
    for e in all_entries(generation=1):
        groups[(e.release, e.site, e.layer, e.width)].append(e)
    for key, group in groups.items():
        picks = [e for e in group if e.canonical]
        assert len(picks) == 1, key
        assert abs(picks[0].l0 - 100) == min(abs(e.l0 - 100) for e in group), key
    # The report's worked examples: 2B res 16k layer 12 -> 82 of (22 ... 445); layer 20 -> 71.
    l12 = find_saes(model="gemma-2-2b", site="res", layer=12, width="16k")
    assert [e.l0 for e in l12] == [22, 41, 82, 176, 445]
    assert [e.l0 for e in l12 if e.canonical] == [82]
    assert [
        e.l0 for e in find_saes(model="gemma-2-2b", site="res", layer=20, width=16 * K, l0=100)
    ] == [71]
    # Every SAELens alias points at the catalog's canonical pick, with the same Neuronpedia id.
    directory = get_pretrained_saes_directory()
    n_aliases = 0
    for release in (r for r in list_releases() if r.alias_of):
        lookup = directory[release.name]
        ours = {e.sae_id: e for e in find_saes(release=release.name)}
        assert set(ours) == set(lookup.saes_map)
        for sae_id, path in lookup.saes_map.items():
            base = get_entry(release.alias_of, path)
            assert base.canonical and ours[sae_id].path == path, (release.name, sae_id)
            assert ours[sae_id].neuronpedia_id == lookup.neuronpedia_id[sae_id]
            n_aliases += 1
    assert n_aliases == 3 + 52 + 52 + 58 + 6 + 84 + 84 + 90


def test_every_catalog_id_is_servable_through_the_sae_lens_route():
    directory = get_pretrained_saes_directory()
    for e in all_entries(include_aliases=True):
        lookup = directory[e.release]
        assert lookup.conversion_func in ROUTED_LOADERS
        assert lookup.repo_id == e.repo_id and lookup.saes_map[e.sae_id] == e.path
    base = {(e.repo_id, e.path): e for e in all_entries()}
    some = list(base.items())[::97]
    for (repo, path), e in some:
        assert entry_for_path(repo, path) == e
    assert entry_for_path("google/gemma-scope-2b-pt-res", "layer_99/width_16k/average_l0_1") is None


def test_neuronpedia_ids():
    demo = get_entry("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71")
    assert demo.neuronpedia_id == "gemma-2-2b/20-gemmascope-res-16k"  # inherited from its alias
    own = get_entry("gemma-scope-2b-pt-res", "layer_5/width_16k/average_l0_143")
    assert own.neuronpedia_id == "gemma-2-2b/5-gemmascope-res-16k__l0-143"
    assert (
        get_entry("gemma-scope-27b-pt-res", "layer_10/width_131k/average_l0_15").neuronpedia_id
        is None
    )


def test_find_saes_filters_and_nearest_l0():
    hits = find_saes(model="google/gemma-2-9b-it", width="131k", l0=50)
    assert [(e.layer, e.site) for e in hits] == [(9, "res"), (20, "res"), (31, "res")]
    for e in hits:
        ladder = [x.l0 for x in find_saes(model="gemma-2-9b-it", layer=e.layer, width=e.width)]
        assert abs(e.l0 - 50) == min(abs(x - 50) for x in ladder)
    assert find_saes(model="gemma-2-27b", site="att") == []
    emb = find_saes(model="gemma-2-2b", site="embedding")
    assert [e.l0 for e in emb] == [6, 21, 44, 111] and emb[0].hook_name == "hook_embed"


def test_width_parsing():
    assert [parse_width(w) for w in ("16k", "width_1m", 65536, "131k")] == [
        2**14,
        2**20,
        2**16,
        2**17,
    ]
    with pytest.raises(ValueError, match="unknown width '17k'"):
        parse_width("17k")


def test_unknown_ids_name_the_closest():
    with pytest.raises(UnknownSAEError) as err:
        get_entry("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_70")
    assert str(err.value).startswith(
        "unknown sae_id 'layer_20/width_16k/average_l0_70' in gemma-scope-2b-pt-res; "
        "closest: average_l0_71, average_l0_38"
    )
    with pytest.raises(UnknownSAEError, match="closest: layer_20/width_16k/canonical"):
        get_entry("gemma-scope-2b-pt-res-canonical", "layer_20/width_16/canonical")
    with pytest.raises(UnknownSAEError, match="closest: gemma-scope-9b-pt-mlp"):
        get_entry("gemma-scope-9b-mlp", "layer_0/width_16k/canonical")


def test_committed_catalog_is_what_the_tool_generates():
    spec = importlib.util.spec_from_file_location(
        "make_catalog", ROOT / "tools" / "make_catalog.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    import sae_lens

    yaml_path = Path(sae_lens.__file__).parent / "pretrained_saes.yaml"
    text = tool.dump(tool.build(yaml_path), f"sae_lens {sae_lens.__version__} pretrained_saes.yaml")
    assert text == (ROOT / "gemma_scope_ext" / "pretrained" / "data" / "catalog.json").read_text()


def test_cli_list(capsys):
    import gemma_scope_cli

    assert gemma_scope_cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + len(list_releases())
    assert gemma_scope_cli.main(["list", "--model", "gemma-2-2b", "--site", "res", "--layer", "12",
                                 "--width", "16k"]) == 0  # fmt: skip
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[5] for r in rows] == ["22", "41", "82", "176", "445"]
    assert [r[5] for r in rows if r[6] == "*"] == ["82"]  # no skip column on Gemma Scope 1
    assert (
        gemma_scope_cli.main(["list", "--site", "transcoder", "--canonical", "--layer", "7",
                              "--generation", "1"]) == 0
    )
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    release, sae_id = "gemma-scope-2b-pt-transcoders", "layer_7/width_16k/average_l0_70"
    np_id = "gemma-2-2b/7-gemmascope-transcoder-16k"
    assert rows == [[release, sae_id, "transcoder", "7", "16k", "70", "*", np_id]]


def test_cli_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, gemma_scope_cli; p = gemma_scope_cli.build_parser();"
            "assert {'list', 'info', 'download'} <= set(p._subparsers._group_actions[0].choices);"
            "assert 'torch' not in sys.modules")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
