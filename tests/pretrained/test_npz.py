"""Stored params.npz members are memory-mapped in place: numpy's values, no copy, no cache file."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile

import numpy as np
import pytest
import torch

from gemma_scope_ext.pretrained import cache, catalog
from gemma_scope_ext.pretrained.catalog import get_entry
from gemma_scope_ext.pretrained.loader import ParamsFileError, from_pretrained, load_params
from gemma_scope_ext.pretrained.npz import IntegrityError, all_stored, map_npz, verify_blob
from tests.helpers.hf_cache import jumprelu_reference, random_params, use_hub_cache, write_params

ODD_ARRAYS = {
    "a": np.arange(35, dtype=np.float32).reshape(5, 7) / 3,
    "b": np.linspace(-1, 1, 24).reshape(2, 3, 4),  # float64, 3-D
    "c": np.arange(-5, 6, dtype=np.int16),
    "d": np.array(2.5, dtype=np.float32),  # 0-d
    "e": np.zeros((0, 3), dtype=np.float32),  # empty
}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    return use_hub_cache(tmp_path, monkeypatch)


@pytest.fixture
def entry(monkeypatch):
    """A residual SAE entry on the tiny Gemma 2 (d_in 128) with 40 latents."""
    release, sae_id = "gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_59"
    fake = dataclasses.replace(get_entry(release, sae_id), model="tiny-gemma2", width=40)
    monkeypatch.setitem(catalog._load()[1][release], sae_id, fake)
    return fake


def disk_bytes(root) -> int:
    return sum(
        os.lstat(os.path.join(d, f)).st_size for d, _, files in os.walk(root) for f in files
    )


@pytest.mark.parametrize("order", ["C", "F"])
def test_mapped_arrays_equal_numpys_load(tmp_path, order):
    path = tmp_path / "odd.npz"
    arrays = {k: np.asfortranarray(v) if order == "F" else v for k, v in ODD_ARRAYS.items()}
    np.savez(path, **arrays)
    assert all_stored(path)
    mapped = map_npz(path)
    with np.load(path) as ref:
        assert sorted(mapped) == sorted(ref.files)
        for name in ref.files:
            assert mapped[name].dtype == ref[name].dtype and mapped[name].shape == ref[name].shape
            np.testing.assert_array_equal(mapped[name], ref[name])
            assert mapped[name].flags.c_contiguous
    # C-ordered members are views of the file itself; Fortran ones were re-laid out in memory.
    assert isinstance(mapped["b"], np.memmap) == (order == "C")


def test_stored_members_are_mapped_from_the_file_not_copied(hub, entry):
    params = random_params(entry.d_in, entry.width, seed=1)
    npz = write_params(hub, entry.repo_id, entry.path, params)
    before = disk_bytes(hub.parent)
    loaded = load_params(entry)
    assert disk_bytes(hub.parent) == before  # no second copy anywhere
    assert not cache.cache_root().exists()
    for name, value in params.items():
        assert torch.equal(loaded[name], torch.from_numpy(value)), name
    # Each tensor's memory lies inside a mapping of the blob (read from /proc/self/maps).
    blob = str(npz.resolve())
    spans = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith(blob):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                spans.append((lo, hi))
    for name, t in loaded.items():
        ptr = t.data_ptr()
        assert any(lo <= ptr < hi for lo, hi in spans), name
    # Copy-on-write: writing into a loaded weight never changes the file.
    digest = hashlib.sha256(npz.read_bytes()).hexdigest()
    loaded["W_enc"].mul_(0)
    assert hashlib.sha256(npz.read_bytes()).hexdigest() == digest
    assert torch.equal(load_params(entry)["W_enc"], torch.from_numpy(params["W_enc"]))


def test_fortran_ordered_npz_loads_correctly(hub, entry):
    params = random_params(entry.d_in, entry.width, seed=2)
    npz = write_params(hub, entry.repo_id, entry.path, params, fortran=True)
    with zipfile.ZipFile(npz) as zf, zf.open("W_enc.npy") as f:
        assert b"'fortran_order': True" in f.read(128)  # the file really is Fortran-ordered
    sae = from_pretrained(entry.release, entry.sae_id)
    for name, value in params.items():
        assert torch.equal(getattr(sae, name).detach(), torch.from_numpy(value)), name
    x = np.random.default_rng(3).standard_normal((4, entry.d_in)).astype(np.float32)
    _, x_hat_ref = jumprelu_reference(params, x)
    with torch.no_grad():
        x_hat = sae(torch.from_numpy(x))
    np.testing.assert_allclose(x_hat.numpy(), x_hat_ref, atol=1e-4, rtol=1e-4)
    assert not cache.cache_root().exists()


@pytest.mark.parametrize("fortran", [False, True])
def test_compressed_npz_falls_back_to_the_checked_cache(hub, entry, fortran):
    params = random_params(entry.d_in, entry.width, seed=4)
    npz = write_params(hub, entry.repo_id, entry.path, params, compressed=True, fortran=fortran)
    assert not all_stored(npz)
    with pytest.raises(ValueError, match="compressed"):
        map_npz(npz)
    for _ in range(2):  # converted, then served from the cache
        loaded = load_params(entry)
        for name, value in params.items():
            assert torch.equal(loaded[name], torch.from_numpy(value)), name
        assert cache.cache_path(entry, npz).is_file()


def _member_offset(path, name: str) -> int:
    with zipfile.ZipFile(path) as zf:
        return zf.getinfo(name).header_offset


def _damage(blob, at: int, data: bytes) -> None:
    raw = bytearray(blob.read_bytes())
    raw[at : at + len(data)] = data
    blob.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, message", [
    ("truncate", "not a readable zip"),
    ("local_header", "b_dec: no local file header at offset"),
    ("npy_header", "threshold: not a .npy header"),
    ("npy_shape", r"b_enc: the .npy header says float32 \(41,\)"),
])  # fmt: skip
def test_damaged_npz_gives_a_clear_error(hub, entry, damage, message):
    params = random_params(entry.d_in, entry.width, seed=5)
    npz = write_params(hub, entry.repo_id, entry.path, params)
    blob = npz.resolve()
    if damage == "truncate":
        blob.write_bytes(blob.read_bytes()[:-200])
    elif damage == "local_header":
        _damage(blob, _member_offset(blob, "b_dec.npy"), b"XXXX")
    elif damage == "npy_header":
        at = _member_offset(blob, "threshold.npy")
        raw = blob.read_bytes()
        n_name, n_extra = (int.from_bytes(raw[at + i : at + i + 2], "little") for i in (26, 28))
        assert raw[at + 30 + n_name + n_extra :].startswith(b"\x93NUMPY")
        _damage(blob, at + 30 + n_name + n_extra, b"\x00NOTNPY")
    else:  # a header that claims one more latent than the bytes hold
        raw = blob.read_bytes()
        at = raw.index(b"(40,)", _member_offset(blob, "b_enc.npy"))
        _damage(blob, at, b"(41,)")
    with pytest.raises(ParamsFileError, match=message) as err:
        from_pretrained(entry.release, entry.sae_id)
    assert "damaged or truncated" in str(err.value) and str(npz) in str(err.value)
    assert not cache.cache_root().exists()


def test_sha256_verification_catches_changed_bytes(hub, entry):
    params = random_params(entry.d_in, entry.width, seed=6)
    npz = write_params(hub, entry.repo_id, entry.path, params)
    blob = npz.resolve()
    assert verify_blob(npz) == blob.name == hashlib.sha256(blob.read_bytes()).hexdigest()
    load_params(entry, verify=True)  # intact: passes
    # Flip bytes inside W_dec's data: the zip and .npy structure stay valid.
    _damage(blob, blob.stat().st_size // 2, b"\xff\xff\xff\xff")
    silent = load_params(entry)  # negative control: without verification the change goes unseen
    assert not all(torch.equal(silent[k], torch.from_numpy(v)) for k, v in params.items())
    with pytest.raises(ParamsFileError, match=f"sha256 of its bytes is .*stored it as {blob.name}"):
        load_params(entry, verify=True)
    with pytest.raises(IntegrityError):
        verify_blob(npz)


def test_verify_refuses_a_file_that_is_not_a_hub_blob(tmp_path):
    path = tmp_path / "params.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a Hugging Face blob named by its sha256"):
        verify_blob(path)


def test_cli_download_verifies_and_says_no_copy_is_needed(hub, entry, capsys):
    import gemma_scope_cli

    npz = write_params(hub, entry.repo_id, entry.path, random_params(entry.d_in, entry.width))
    assert gemma_scope_cli.main(["download", entry.release, entry.sae_id, "--verify"]) == 0
    assert "not needed (uncompressed: memory-mapped in place)" in capsys.readouterr().out
    _damage(npz.resolve(), npz.stat().st_size // 2, b"\x00\x01\x02\x03")
    assert gemma_scope_cli.main(["download", entry.release, entry.sae_id, "--verify"]) == 2
    assert "sha256 of its bytes" in capsys.readouterr().err
    assert not cache.cache_root().exists()
