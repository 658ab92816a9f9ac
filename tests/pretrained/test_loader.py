"""Loading released Gemma Scope weights from a temporary, offline Hugging Face cache.

Real 2B shapes for the demo SAE (302 MB) and an embedding SAE; every other code path uses small
fabricated files: the catalog entry is swapped (with monkeypatch, undone after each test) for one on
the embedded tiny Gemma 2, so shapes come from the tiny model's spec instead of the 2B's.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import sae_lens
import torch

import gemma_scope_ext
from gemma_scope_ext.models import get_spec
from gemma_scope_ext.pretrained import cache, catalog, loader
from gemma_scope_ext.pretrained.cache import cache_path
from gemma_scope_ext.pretrained.catalog import UnknownSAEError, get_entry
from gemma_scope_ext.pretrained.loader import ParamsFileError, from_pretrained
from gemma_scope_ext.pretrained.sae_lens_route import (
    _wrap,
    original_loader,
    register_sae_lens_route,
)
from gemma_scope_ext.saes import GemmaScopeSAE, GemmaScopeTranscoder
from tests.helpers.hf_cache import (
    COMMIT,
    jumprelu_reference,
    random_params,
    use_hub_cache,
    write_params,
)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    return use_hub_cache(tmp_path, monkeypatch)


def fabricate(monkeypatch, release: str, sae_id: str, width: int = 40):
    """Swap a catalog entry for one on the tiny Gemma 2 with ``width`` latents (undone after)."""
    entry = dataclasses.replace(get_entry(release, sae_id), model="tiny-gemma2", width=width)
    monkeypatch.setitem(catalog._load()[1][release], sae_id, entry)
    return entry


def write_for(hub, entry, seed=0, compressed=False, **overrides):
    params = random_params(entry.d_in, entry.width, entry.d_out, seed=seed)
    params.update(overrides)
    return params, write_params(hub, entry.repo_id, entry.path, params, compressed=compressed)


def assert_weights(sae, params):
    for name, value in params.items():
        assert torch.equal(getattr(sae, name).detach(), torch.from_numpy(value)), name


def test_real_shape_demo_sae_cold_then_warm(hub, monkeypatch):
    entry = get_entry("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71")
    params, npz = write_for(hub, entry)
    assert params["W_enc"].shape == (2304, 16384)  # not square: a transpose cannot go unnoticed

    sae = from_pretrained(entry.release, entry.sae_id)
    assert type(sae) is GemmaScopeSAE
    assert_weights(sae, params)
    meta = sae.cfg.metadata
    assert (meta.hook_name, meta.model_name) == ("blocks.20.hook_resid_post", "gemma-2-2b")
    assert (meta.context_size, meta.prepend_bos) == (1024, True)
    assert meta.neuronpedia_id == "gemma-2-2b/20-gemmascope-res-16k"
    assert sae.cfg.apply_b_dec_to_input is False

    x = np.random.default_rng(1).standard_normal((6, 2304)).astype(np.float32)
    f_ref, x_hat_ref = jumprelu_reference(params, x)
    with torch.no_grad():
        f = sae.encode(torch.from_numpy(x))
        x_hat = sae.decode(f)
    assert 0 < (f_ref > 0).mean() < 1
    np.testing.assert_allclose(f.numpy(), f_ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(x_hat.numpy(), x_hat_ref, atol=1e-3, rtol=1e-4)

    # Stored (uncompressed) like Gemma Scope's files: mapped in place, nothing converted or cached.
    assert not cache.cache_root().exists()

    def no_npz(*args):
        raise AssertionError("a stored npz was decoded")

    monkeypatch.setattr(loader, "read_params_npz", no_npz)
    alias = from_pretrained("gemma-scope-2b-pt-res-canonical", "layer_20/width_16k/canonical")
    assert_weights(alias, params)
    assert not cache.cache_root().exists()
    # The SAELens route serves the same SAE from the same cache.
    routed = sae_lens.SAE.from_pretrained(entry.release, entry.sae_id)
    assert type(routed) is GemmaScopeSAE
    assert_weights(routed, params)
    assert routed.cfg.to_dict() == sae.cfg.to_dict()


def test_embedding_sae_is_rescaled_for_hook_embed(hub):
    entry = get_entry("gemma-scope-2b-pt-res", "embedding/width_4k/average_l0_111")
    params, _ = write_for(hub, entry, seed=2)
    sae = from_pretrained(entry.release, entry.sae_id)
    s = math.sqrt(2304)
    assert sae.cfg.metadata.hook_name == "hook_embed"
    np.testing.assert_allclose(sae.W_enc.detach().numpy(), params["W_enc"] / s, rtol=1e-6)
    np.testing.assert_allclose(sae.W_dec.detach().numpy(), params["W_dec"] * s, rtol=1e-6)
    np.testing.assert_allclose(sae.b_dec.detach().numpy(), params["b_dec"] * s, rtol=1e-6)
    # Meaning of the rescale: on TransformerLens's s * e the SAE reconstructs s * x_hat(e).
    e = np.random.default_rng(3).standard_normal((5, 2304)).astype(np.float32) / 20
    f_ref, e_hat_ref = jumprelu_reference(params, e)
    with torch.no_grad():
        f = sae.encode(torch.from_numpy(e * s))
        out = sae.decode(f)
    np.testing.assert_allclose(f.numpy(), f_ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(out.numpy(), s * e_hat_ref, atol=1e-3, rtol=1e-4)

    routed = sae_lens.SAE.from_pretrained(entry.release, entry.sae_id)
    assert_weights(routed, {k: getattr(sae, k).detach().numpy() for k in params})
    # SAELens's own gemma_2 loader rescales W_enc and W_dec but leaves b_dec unscaled.
    stock = sae_lens.SAE.from_pretrained(
        entry.release, entry.sae_id, converter=original_loader("gemma_2")
    )
    torch.testing.assert_close(stock.W_enc, sae.W_enc)
    torch.testing.assert_close(stock.W_dec, sae.W_dec)
    torch.testing.assert_close(stock.b_dec * s, sae.b_dec)


def test_attention_sae_reads_hook_z_head_major(hub, monkeypatch):
    entry = fabricate(monkeypatch, "gemma-scope-2b-pt-att", "layer_1/width_16k/average_l0_40")
    spec = get_spec("tiny-gemma2")
    assert entry.d_in == spec.n_heads * spec.d_head
    params, _ = write_for(hub, entry, seed=4)
    sae = from_pretrained(entry.release, entry.sae_id)
    assert sae.cfg.metadata.hook_name == "blocks.1.attn.hook_z"
    assert sae.cfg.reshape_activations == "hook_z"
    z = (
        np.random.default_rng(5)
        .standard_normal((2, 3, spec.n_heads, spec.d_head))
        .astype(np.float32)
    )
    f_ref, x_hat_ref = jumprelu_reference(params, z.reshape(2, 3, -1))
    with torch.no_grad():
        out = sae(torch.from_numpy(z))
    assert out.shape == z.shape
    np.testing.assert_allclose(out.numpy(), x_hat_ref.reshape(z.shape), atol=1e-4, rtol=1e-4)


def test_transcoder_with_output_hook_and_sae_lens_route(hub, monkeypatch):
    entry = fabricate(
        monkeypatch, "gemma-scope-2b-pt-transcoders", "layer_2/width_16k/average_l0_49"
    )
    params, _ = write_for(hub, entry, seed=6)
    tc = from_pretrained(entry.release, entry.sae_id)
    assert type(tc) is GemmaScopeTranscoder
    meta = tc.cfg.metadata
    assert (meta.hook_name, meta.hook_name_out) == (
        "blocks.2.ln2.hook_normalized",
        "blocks.2.hook_mlp_out",
    )
    assert meta.neuronpedia_id == "gemma-2-2b/2-gemmascope-transcoder-16k"
    assert_weights(tc, params)
    x = np.random.default_rng(7).standard_normal((4, entry.d_in)).astype(np.float32)
    f_ref, y_ref = jumprelu_reference(params, x)
    with torch.no_grad():
        y = tc.decode(tc.encode(torch.from_numpy(x)))
    np.testing.assert_allclose(y.numpy(), y_ref, atol=1e-4, rtol=1e-4)

    routed = sae_lens.SAE.from_pretrained(entry.release, entry.sae_id)
    assert type(routed) is GemmaScopeTranscoder
    assert_weights(routed, params)
    assert routed.cfg.to_dict() == tc.cfg.to_dict()


def test_truncated_npz_gives_clear_error_and_no_cache(hub, monkeypatch):
    entry = fabricate(monkeypatch, "gemma-scope-2b-pt-mlp", "layer_3/width_16k/average_l0_44")
    _, npz = write_for(hub, entry)
    blob = npz.resolve()
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    with pytest.raises(ParamsFileError, match="damaged or truncated") as err:
        from_pretrained(entry.release, entry.sae_id)
    assert str(npz) in str(err.value)
    assert not cache_path(entry, npz).parent.exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda p: {**p, "W_enc": np.ascontiguousarray(p["W_enc"].T)},
            r"W_enc is float32 \(40, 128\)",
        ),
        (lambda p: {**p, "b_dec": p["b_dec"].astype(np.float64)}, "b_dec is float64"),
        (lambda p: {k: v for k, v in p.items() if k != "threshold"}, "expected .*threshold"),
        (lambda p: {**p, "log_threshold": p["threshold"]}, "log_threshold"),
    ],
)
def test_wrong_arrays_give_clear_errors_and_no_cache(hub, monkeypatch, change, message):
    entry = fabricate(monkeypatch, "gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_59")
    assert entry.d_in == 128  # the tiny model's d_model, used in the expected message
    params = change(random_params(entry.d_in, entry.width))
    npz = write_params(hub, entry.repo_id, entry.path, params)
    with pytest.raises(ParamsFileError, match=message) as err:
        from_pretrained(entry.release, entry.sae_id)
    assert str(npz) in str(err.value) and entry.sae_id in str(err.value)
    assert not cache_path(entry, npz).parent.exists()


def test_pickled_arrays_are_refused(hub, monkeypatch):
    entry = fabricate(monkeypatch, "gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_59")
    params = random_params(entry.d_in, entry.width)
    params["b_enc"] = np.array([{"not": "an array"}], dtype=object)
    write_params(hub, entry.repo_id, entry.path, params)
    with pytest.raises(ParamsFileError, match="allow_pickle"):
        from_pretrained(entry.release, entry.sae_id)


def rewrite_header(path, change):
    """Replace the safetensors JSON header of ``path`` by ``change(header)``, same length."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    text = json.dumps(change(json.loads(raw[8 : 8 + n])), separators=(",", ":")).encode()
    assert len(text) <= n
    path.write_bytes(raw[:8] + text.ljust(n) + raw[8 + n :])


def swap_offsets(header):
    # b_enc and threshold have the same shape: a swap keeps every size check happy.
    header["b_enc"]["data_offsets"], header["threshold"]["data_offsets"] = (
        header["threshold"]["data_offsets"], header["b_enc"]["data_offsets"])
    return header


HEADER_DAMAGE = {
    "missing_offsets": lambda h: {**h, "W_enc": {k: v for k, v in h["W_enc"].items()
                                                 if k != "data_offsets"}},
    "header_is_a_list": lambda h: [h["__metadata__"]],
    "swapped_offsets": swap_offsets,
}


@pytest.mark.parametrize("damage", ["truncate", "garbage_header", "stale_source", "flipped_bytes",
                                    *HEADER_DAMAGE])
def test_bad_cache_file_is_rebuilt_not_trusted(hub, monkeypatch, damage):
    entry = fabricate(monkeypatch, "gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_59")
    params, npz = write_for(hub, entry, seed=8, compressed=True)
    from_pretrained(entry.release, entry.sae_id)
    cached = cache_path(entry, npz)
    good_size = cached.stat().st_size
    if damage == "truncate":
        cached.write_bytes(cached.read_bytes()[:-100])
    elif damage == "garbage_header":
        cached.write_bytes(b"\xff" * 64 + cached.read_bytes()[64:])
    elif damage == "flipped_bytes":  # bit rot inside the data: sizes and header all intact
        raw = bytearray(cached.read_bytes())
        raw[-40:-32] = bytes(b ^ 0xFF for b in raw[-40:-32])
        cached.write_bytes(bytes(raw))
    elif damage in HEADER_DAMAGE:
        rewrite_header(cached, HEADER_DAMAGE[damage])
    else:  # same commit, new npz bytes (e.g. force_download): the copy must not be reused
        params, npz = write_for(hub, entry, seed=9, compressed=True)
    sae = from_pretrained(entry.release, entry.sae_id)
    assert_weights(sae, params)
    assert cached.stat().st_size == good_size
    assert [p.name for p in cached.parent.iterdir()] == ["params.safetensors"]  # no temp files


def test_revision_selects_snapshot_and_its_own_cache(hub, monkeypatch):
    entry = fabricate(monkeypatch, "gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_59")
    main, npz_main = write_for(hub, entry, seed=10, compressed=True)
    other = random_params(entry.d_in, entry.width, seed=11)
    npz_v2 = write_params(hub, entry.repo_id, entry.path, other, commit="f" * 40, ref="v2",
                          compressed=True)
    assert_weights(from_pretrained(entry.release, entry.sae_id, revision="v2"), other)
    assert_weights(from_pretrained(entry.release, entry.sae_id, revision=COMMIT), main)
    assert cache_path(entry, npz_main) != cache_path(entry, npz_v2)
    assert cache_path(entry, npz_v2).exists()


def test_dtype_and_device_arguments(hub, monkeypatch):
    entry = fabricate(monkeypatch, "gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_59")
    params, _ = write_for(hub, entry)
    sae = from_pretrained(entry.release, entry.sae_id, dtype="bfloat16", device="cpu")
    assert sae.W_enc.dtype == torch.bfloat16 and sae.cfg.dtype == "bfloat16"
    expected = torch.from_numpy(params["W_dec"]).to(torch.bfloat16)
    assert torch.equal(sae.W_dec.detach(), expected)


def test_offline_without_file_says_what_to_do(hub):
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set.*gemma-scope download"):
        from_pretrained("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71")


def test_unknown_ids_suggest_the_closest(hub):
    with pytest.raises(UnknownSAEError, match="closest: average_l0_71"):
        gemma_scope_ext.from_pretrained("gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_70")
    with pytest.raises(
        UnknownSAEError,
        match="unknown release 'gemma-scope-2b-res'; closest: gemma-scope-2b-pt-res",
    ):
        gemma_scope_ext.from_pretrained("gemma-scope-2b-res", "layer_20/width_16k/average_l0_71")


def test_cache_root_follows_env(tmp_path, monkeypatch):
    monkeypatch.delenv("GEMMA_SCOPE_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert cache.cache_root() == tmp_path / "hf" / "gemma_scope"
    monkeypatch.setenv("GEMMA_SCOPE_CACHE", str(tmp_path / "mine"))
    assert cache.cache_root() == tmp_path / "mine"


def test_route_registration_is_idempotent_and_passes_other_repos_through():
    from sae_lens.loading.pretrained_sae_loaders import (
        NAMED_PRETRAINED_SAE_LOADERS,
        gemma_2_sae_huggingface_loader,
        gemma_2_transcoder_huggingface_loader,
    )

    before = dict(NAMED_PRETRAINED_SAE_LOADERS)
    register_sae_lens_route()
    gemma_scope_ext.register_with_sae_lens()
    assert NAMED_PRETRAINED_SAE_LOADERS == before
    assert original_loader("gemma_2") is gemma_2_sae_huggingface_loader
    assert original_loader("gemma_2_transcoder") is gemma_2_transcoder_huggingface_loader
    assert NAMED_PRETRAINED_SAE_LOADERS["gemma_2"] is not gemma_2_sae_huggingface_loader

    calls = []
    routed = _wrap(lambda *args: calls.append(args) or "stock")
    assert routed("someone/other-saes", "layer_3", "cpu", False, None) == "stock"
    assert calls == [("someone/other-saes", "layer_3", "cpu", False, None)]


def test_cli_download_then_info(hub, monkeypatch, capsys):
    import gemma_scope_cli

    entry = fabricate(monkeypatch, "gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_59")
    params, npz = write_for(hub, entry, seed=12, compressed=True)
    argv = ["download", entry.release, entry.sae_id]
    assert gemma_scope_cli.main(argv) == 0
    cached = cache_path(entry, npz)
    assert f"converted:   {cached}" in capsys.readouterr().out
    from safetensors.numpy import load_file

    stored = load_file(cached)
    assert all(np.array_equal(stored[k], v) for k, v in params.items())
    assert gemma_scope_cli.main(["info", entry.release, entry.sae_id]) == 0
    out = capsys.readouterr().out
    assert f"downloaded:  {npz}" in out and f"converted:   {cached}" in out
    assert "hook:        blocks.3.hook_resid_post" in out
    assert gemma_scope_cli.main(["download", entry.release, "layer_3/width_16k/average_l0_58"]) == 2
    assert "closest: average_l0_59" in capsys.readouterr().err
