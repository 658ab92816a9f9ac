"""The safetensors cache of compressed params.npz files: never stale, never left half-written."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gemma_scope_ext.pretrained import catalog
from gemma_scope_ext.pretrained.cache import cache_path, source_tag
from gemma_scope_ext.pretrained.catalog import get_entry
from gemma_scope_ext.pretrained.loader import load_params
from tests.helpers.hf_cache import random_params, use_hub_cache, write_params

ROOT = Path(__file__).resolve().parents[2]
RELEASE, SAE_ID = "gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_59"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    return use_hub_cache(tmp_path, monkeypatch)


@pytest.fixture
def entry(monkeypatch):
    fake = dataclasses.replace(get_entry(RELEASE, SAE_ID), model="tiny-gemma2", width=40)
    monkeypatch.setitem(catalog._load()[1][RELEASE], SAE_ID, fake)
    return fake


def assert_params(loaded, params):
    for name, value in params.items():
        assert torch.equal(loaded[name], torch.from_numpy(value)), name


@pytest.mark.parametrize("how", ["replaced", "rewritten_in_place"])
def test_same_size_and_mtime_replacement_is_not_served_stale(hub, entry, how):
    old = random_params(entry.d_in, entry.width, seed=1)
    npz = write_params(hub, entry.repo_id, entry.path, old, compressed=True)
    assert_params(load_params(entry), old)
    assert cache_path(entry, npz).is_file()
    blob = npz.resolve()
    st = blob.stat()
    # New weights, deflated to the very same size (padded with a tiny array), and the old mtime.
    for seed in range(2, 200):
        new = random_params(entry.d_in, entry.width, seed=seed)
        other = write_params(hub.parent / "scratch", entry.repo_id, entry.path, new,
                             compressed=True).resolve()  # fmt: skip
        if other.stat().st_size == st.st_size:
            break
    else:
        raise AssertionError("no seed gave a compressed file of the same size")
    if how == "replaced":
        os.replace(other, blob)
    else:
        blob.write_bytes(other.read_bytes())
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    now = blob.stat()
    # The old key (size and mtime) cannot tell the two files apart ...
    assert (now.st_size, now.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    # ... the new one can, and the new weights are served.
    assert_params(load_params(entry), new)


KILLED_WRITER = textwrap.dedent("""
    import dataclasses, os, sys, time
    import safetensors.torch
    from gemma_scope_ext.pretrained import catalog, loader
    release, sae_id = sys.argv[1], sys.argv[2]
    fake = dataclasses.replace(catalog.get_entry(release, sae_id), model="tiny-gemma2", width=40)
    catalog._load()[1][release][sae_id] = fake

    def stuck(tensors, path, metadata=None):  # half the bytes on disk, then wait to be killed
        with open(path, "wb") as f:
            f.write(b"\\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        print("WRITING", path, flush=True)
        time.sleep(600)

    safetensors.torch.save_file = stuck
    loader.load_params(fake)
""")


def test_sigkill_during_conversion_leaves_nothing_later_loads_trust_or_keep(hub, entry):
    params = random_params(entry.d_in, entry.width, seed=3)
    npz = write_params(hub, entry.repo_id, entry.path, params, compressed=True)
    cached = cache_path(entry, npz)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, RELEASE, SAE_ID],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env=dict(os.environ),
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("WRITING"), line
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    tmp = Path(line.split(maxsplit=1)[1].strip())
    assert tmp.is_file() and tmp.parent == cached.parent  # the kill left a partial temporary
    assert not cached.exists()
    assert_params(load_params(entry), params)  # rebuilt from the npz, not from the partial file
    assert sorted(p.name for p in cached.parent.iterdir()) == ["params.safetensors"]
    assert_params(load_params(entry), params)  # and the rebuilt copy is served


def test_source_tag_changes_with_content_not_with_reading(hub, entry):
    params = random_params(entry.d_in, entry.width, seed=4)
    npz = write_params(hub, entry.repo_id, entry.path, params, compressed=True)
    tag = source_tag(npz)
    load_params(entry)
    assert source_tag(npz) == tag
    assert {"source_inode", "source_ctime_ns", "source_members"} <= set(tag)
