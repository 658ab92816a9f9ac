"""find_saes refuses filters no release could match, and says which valid filter matched nothing."""

from __future__ import annotations

import math

import pytest

import gemma_scope_cli
from gemma_scope_ext.pretrained.catalog import UnknownSAEError, get_entry, get_release
from gemma_scope_ext.pretrained.query import check_filters, find_saes, why_empty


@pytest.mark.parametrize("filters, message", [
    (dict(model="gemma-2-3b", generation=1), r"unknown model 'gemma-2-3b'; expected one of: gemma-2-27b, "
                               r"gemma-2-2b, gemma-2-9b, gemma-2-9b-it; closest: gemma-2-9b, gemma-2-2b"),
    (dict(site="resid"), r"unknown site 'resid'; expected one of: att, embedding, mlp, res, "
                         r"transcoder; closest: res"),
    (dict(model="gemma-2-2b", layer=99), r"layer 99 is impossible: gemma-2-2b has 26 layers; "
                                         r"expected 0 to 25"),
    (dict(model="gemma-2-2b", layer=26), "gemma-2-2b has 26 layers"),
    (dict(layer=46, generation=1), "the deepest model has 46; expected 0 to 45"),
    (dict(layer=-1), "layer -1 is impossible"),
    (dict(width=0), r"width 0 is not a Gemma Scope width; expected one of 4k \(4096\), 16k"),
    (dict(width=-16384), "width -16384 is not a Gemma Scope width"),
    (dict(width="0"), "width '0' is not a Gemma Scope width"),
    (dict(width=16000), "width 16000 is not a Gemma Scope width"),
    (dict(width="17k"), "unknown width '17k'; expected an int or one of: 4k, 16k"),
    (dict(l0=-1), r"l0 -1 is impossible; expected an average L0 >= 0"),
    (dict(l0=math.nan), "l0 nan is impossible"),
    (dict(release="gemma-scope-2b-res"), "unknown release 'gemma-scope-2b-res'; closest: "
                                         "gemma-scope-2b-pt-res"),
])  # fmt: skip
def test_impossible_filters_name_the_valid_values(filters, message):
    with pytest.raises(ValueError, match=message):
        find_saes(**filters)


@pytest.mark.parametrize("filters, message", [
    (dict(layer="20"), r"layer must be an int, got '20' \(str\)"),
    (dict(layer=True), "layer must be an int"),
    (dict(model=2), r"model must be a string, got 2 \(int\)"),
    (dict(width=16.0), "width must be an int or a label"),
    (dict(l0="100"), "l0 must be a number"),
])  # fmt: skip
def test_wrong_types_are_named(filters, message):
    with pytest.raises(TypeError, match=message):
        find_saes(**filters)


def test_boundaries_and_valid_empty_results():
    # The last block of each model is a valid layer (negative control for the range check).
    assert [e.layer for e in find_saes(model="gemma-2-2b", site="res", layer=25, width="16k",
                                       l0=100)] == [25]  # fmt: skip
    assert find_saes(layer=45, generation=1) == []  # gemma-2-27b has a block 45, but no SAE on it
    # Possible filters matching nothing stay an empty list, and why_empty says which one.
    assert find_saes(model="gemma-2-27b", layer=3) == []
    assert why_empty(model="gemma-2-27b", layer=3) == (
        "no SAE has layer 3 among model=gemma-2-27b; there: 10, 22, 34"
    )
    assert find_saes(model="gemma-2-27b", site="mlp") == []
    assert why_empty(model="gemma-2-27b", site="mlp") == (
        "no SAE has site mlp among model=gemma-2-27b; there: res"
    )
    assert find_saes(model="gemma-2-2b", site="mlp", width="1m") == []
    assert why_empty(model="gemma-2-2b", site="mlp", width="1m") == (
        "no SAE has width 1m among model=gemma-2-2b site=mlp; there: 16k, 65k"
    )
    assert why_empty(model="gemma-2-2b", site="res", layer=20) == ""  # matches: nothing to say
    assert check_filters(model="google/gemma-2-2b", width="16k") == ("gemma-2-2b", 16384)


def test_ids_of_the_wrong_type_or_unknown_are_clear():
    expected = (r"sae_id must be a string such as 'embedding/width_4k/average_l0_6' for "
                r"gemma-scope-2b-pt-res, got None \(NoneType\)")
    with pytest.raises(TypeError, match=expected):
        get_entry("gemma-scope-2b-pt-res", None)
    with pytest.raises(TypeError, match=r"release must be a string .* got 3 \(int\)"):
        get_release(3)
    with pytest.raises(UnknownSAEError, match="closest: average_l0_71, average_l0_38, "):
        get_entry("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_70")
    with pytest.raises(UnknownSAEError, match="closest: layer_20/width_16k/average_l0_71"):
        get_entry("gemma-scope-2b-pt-res", "layer20/width_16k/average_l0_71")


def test_cli_list_says_which_filter_matched_nothing(capsys):
    assert gemma_scope_cli.main(["list", "--model", "gemma-2-27b", "--layer", "3"]) == 1
    out = capsys.readouterr().out
    assert "no SAE has layer 3 among model=gemma-2-27b; there: 10, 22, 34" in out
    assert gemma_scope_cli.main(["list", "--model", "gemma-2-3b"]) == 2
    assert "unknown model 'gemma-2-3b'" in capsys.readouterr().err
    assert gemma_scope_cli.main(["list", "--site", "res", "--width", "0"]) == 2
    assert "width '0' is not a Gemma Scope width" in capsys.readouterr().err
