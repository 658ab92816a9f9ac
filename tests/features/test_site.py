"""The site's files without a browser: data files are JSON with markup characters escaped, a redraw
from the stored data is byte-identical, and the size per latent stays small at Gemma's vocabulary."""

from __future__ import annotations

import json

import pytest

from gemma_scope_ext.features import FeatureConfig, collect_features, render_saved, write_dashboard
from gemma_scope_ext.features.site import js_call
from tests.helpers.synthetic_features import synthetic_feature_data

pytestmark = pytest.mark.usefixtures("one_thread")


def _data_files(root):
    return sorted(p for p in root.rglob("*.js") if p.parent.name != "assets")


def _payload(path):
    text = path.read_text(encoding="utf-8")
    name, _, rest = text.partition("(")
    assert name.startswith("GS.") and rest.endswith(");\n"), path
    return json.loads(rest[: -len(");\n")])


def test_data_files_escape_markup_and_keep_the_text(planted, tmp_path):
    data = collect_features(planted.model, planted.sae, planted.tokens[:4], progress=False,
                            config=FeatureConfig(top_k=4))[0]  # fmt: skip
    evil = '</script><img src=x onerror=alert(1)>&amp;\u2028'
    data.token_strings[next(iter(data.token_strings))] = evil
    write_dashboard(data, tmp_path)
    files = _data_files(tmp_path)
    assert {p.name for p in files} >= {"saes.js", "index.js", "vocab.js", "chunk_00000.js"}
    for path in files:
        raw = path.read_text(encoding="utf-8")
        assert not {"<", ">", "&", "\u2028"} & set(raw), path
        _payload(path)  # valid JSON
    vocab = _payload(next(p for p in files if p.name == "vocab.js"))
    assert evil in vocab  # the exact text survives the escaping
    assert js_call("x", ["<"]) == 'GS.x(["\\u003c"]);\n'


def test_redraw_from_stored_data_is_identical(planted, tmp_path):
    data = collect_features(planted.model, planted.sae, planted.tokens[:4], progress=False)[0]
    write_dashboard(data, tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for p in before:
        if p.suffix in (".js", ".html"):
            p.unlink()
    render_saved(tmp_path)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_site_size_per_latent_at_gemma_vocabulary(tmp_path):
    """Every slot full, 256k-token vocabulary: the data stay under 4.5 KB a latent (so a 16k SAE's
    site is under ~75 MB, and a latent page reads one chunk of 128 latents)."""
    d = 256
    write_dashboard(synthetic_feature_data(d), tmp_path, save_data=False)
    chunks = sum(p.stat().st_size for p in (tmp_path / "synthetic" / "data").glob("chunk_*.js"))
    total = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert chunks / d < 4500 and total / d < 6000, (chunks / d, total / d)
