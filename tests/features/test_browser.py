"""The dashboards in a real headless Chromium, opened from file:// as a person would open them.

Skipped, with the reason, where no Chromium is installed (Debian: ``apt-get install chromium``).
``GEMMA_SCOPE_UPDATE_DOCS=1`` also writes the latent-page screenshot the README shows.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from gemma_scope_ext.features import FeatureConfig, collect_features, write_dashboard
from gemma_scope_ext.features.site import _g, _labels
from tests.features.conftest import CONSTANT, PLANTED
from tests.helpers.browser import SKIP_REASON, Browser, find_chromium

CHROMIUM = find_chromium()
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON),
              pytest.mark.usefixtures("one_thread")]  # fmt: skip
DOCS_PNG = Path(__file__).resolve().parents[2] / "docs" / "features_dashboard.png"
CFG = FeatureConfig(top_k=8, n_quantiles=3, per_quantile=3, context_before=8, context_after=3)


def shown(text: str) -> str:
    """What the page prints for a token's text (dashboard.js ``shown``)."""
    return text.replace("\n", "\u21b5").replace("\t", "\u21e5").replace("\r", "") or "\u2205"


@pytest.fixture(scope="module")
def data(planted):
    return collect_features(planted.model, planted.sae, planted.tokens, config=CFG,
                            names=["planted"], progress=False)[0]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    with Browser(CHROMIUM, width=1100, height=820) as b:
        yield b


def test_the_planted_feature_page_shows_its_top_context(data, planted, browser, tmp_path):
    released = dataclasses.replace(data, info=dataclasses.replace(
        data.info, neuronpedia_id="gemma-2-2b/20-gemmascope-res-16k"))  # as a released SAE's
    index = write_dashboard(released, tmp_path)
    browser.open((tmp_path / "planted" / "latent.html").as_uri() + f"#{PLANTED}")
    row, pos = planted.peak
    lo, hi = max(0, pos - CFG.context_before), min(planted.tokens.shape[1], pos + CFG.context_after + 1)
    words = [shown(data.token_strings[int(t)]) for t in planted.tokens[row, lo:hi]]
    first = browser.eval("document.querySelector('#top .ctx').innerText")
    assert first == "1.00" + "".join(words)  # the activation, then the window's tokens
    centre = browser.eval("document.querySelector('#top .ctx .tok.center').innerText")
    assert centre == shown(data.token_strings[int(planted.tokens[row, pos])])
    view = data.latent(PLANTED)
    bars = browser.eval("document.querySelectorAll('#histogram rect.bar').length")
    assert bars == sum(1 for c in view.histogram[0] if c > 0)
    promoted = browser.eval("document.querySelector('#logits tr:nth-child(2) td').innerText")
    assert promoted == shown(data.token_strings[view.promoted[0][0]])
    assert "density" in browser.eval("document.querySelector('#stats').innerText")
    link = browser.eval("document.querySelector('header a[rel=noopener]').href")
    assert link == released.neuronpedia_url(PLANTED) == (
        f"https://www.neuronpedia.org/gemma-2-2b/20-gemmascope-res-16k/{PLANTED}")
    # the densest latent that is not planted: the README's screenshot
    busiest = max((i for i in range(data.d_sae) if i != CONSTANT), key=lambda i: int(data.fires[i]))
    browser.open((tmp_path / "planted" / "latent.html").as_uri() + f"#{busiest}")
    assert browser.eval("document.querySelectorAll('.quantile').length") == len(
        data.latent(busiest).quantiles)
    shot = browser.screenshot(tmp_path / "latent.png")
    assert shot.stat().st_size > 10_000
    if os.environ.get("GEMMA_SCOPE_UPDATE_DOCS"):
        DOCS_PNG.write_bytes(shot.read_bytes())
    # the list of SAEs links to the SAE's index
    browser.open(index.as_uri())
    assert browser.eval("document.querySelector('td a').getAttribute('href')") == "planted/index.html"


def _matches(data, query: str) -> set[int]:
    """The latents dashboard.js's search keeps for ``query``, computed here from the data."""
    labels, q = _labels(data), query.strip().lower()
    promoted = [[data.token_strings[t] for t in ids[:5]]
                for ids in data.output["promoted_ids"].tolist()]  # fmt: skip
    return {i for i in range(data.d_sae)
            if str(i) == q or q in "\0".join(labels[i] + ["\0"] + promoted[i]).lower()}


def test_search_and_sorting_find_latents(data, planted, browser, tmp_path):
    write_dashboard(data, tmp_path)
    browser.open((tmp_path / "planted" / "index.html").as_uri())
    rows = "Array.from(document.querySelectorAll('#latents tr td:first-child')).map(t => +t.innerText)"
    assert browser.eval(rows)[0] == CONSTANT  # densest first by default: it fires everywhere
    row, pos = planted.peak
    query = data.token_strings[int(planted.tokens[row, pos])].strip()
    browser.type_into("#search", query)
    browser.wait_for(f"document.querySelector('#search').value === {query!r}")
    found = set(browser.eval(rows))
    assert PLANTED in found and found == _matches(data, query)
    browser.eval("document.querySelector('#search').value = ''")
    browser.type_into("#search", str(PLANTED))
    assert PLANTED in browser.eval(rows)
    browser.eval("document.querySelector('#search').value = ''; "
                 "document.querySelector('#search').dispatchEvent(new Event('input'))")
    browser.click("button[data-sort=max]")
    peak = [_g(float(x)) for x in data.max_activation]  # the page sorts the values it was given
    assert browser.eval(rows)[0] == max(range(data.d_sae), key=lambda i: (peak[i], -i))


PAYLOADS = ['<img src=x onerror="window.__pwned=1">', "<script>window.__pwned=2</script>",
            '</script><b id="pwn">x</b>', '"><svg onload="window.__pwned=3">', "&lt;b&gt;"]


def test_token_text_cannot_inject_markup(data, planted, browser, tmp_path):
    row, pos = planted.peak
    window = planted.tokens[row, max(0, pos - CFG.context_before) : pos + 1].tolist()
    ids = list(dict.fromkeys(t for t in reversed(window) if t > 2))[: len(PAYLOADS)]
    assert len(ids) >= 3
    strings = dict(data.token_strings)
    for t, payload in zip(ids, PAYLOADS, strict=False):  # as many payloads as distinct ids
        strings[t] = payload
    evil = dataclasses.replace(data, token_strings=strings,
                               info=dataclasses.replace(data.info, name='<b id="pwn">sae</b>'))
    write_dashboard(evil, tmp_path, slugs=["evil"])
    for page in (tmp_path / "index.html", tmp_path / "evil" / "index.html",
                 tmp_path / "evil" / "latent.html"):  # fmt: skip
        browser.open(page.as_uri() + (f"#{PLANTED}" if page.name == "latent.html" else ""))
        assert browser.eval("window.__pwned === undefined")
        assert browser.eval("document.querySelectorAll('img, svg[onload], #pwn, b').length") == 0
        assert '<b id="pwn">sae</b>' in browser.eval("document.body.innerText")
    text = browser.eval("document.querySelector('#top').innerText")
    assert all(p in text for p in PAYLOADS[: len(ids)])  # shown as text, character for character
