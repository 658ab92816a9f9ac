"""Loading Gemma Scope 2 ids from a temporary, offline Hugging Face cache, through both routes.

Files are written as Gemma Scope 2 stores them (``params.safetensors``: ``w_enc`` [d_in, d_sae],
``w_dec``, ``b_enc``, ``b_dec``, ``threshold``, ``affine_skip_connection`` [d_in, d_out]). One test
uses real gemma-3-270m shapes; the others swap the catalog entry (monkeypatch, undone after each
test) for one with 40 latents, keeping the model's real d_in. References are plain float64 torch.
SAELens's own ``gemma_3`` loader reads the same files for the negative controls (its tensor-shape
lookup, an HTTP range request, is pointed at the local file).
"""

from __future__ import annotations

import dataclasses

import pytest
import sae_lens
import torch
from safetensors import safe_open

import gemma_scope_ext
from gemma_scope_ext.pretrained import catalog
from gemma_scope_ext.pretrained.catalog import get_entry
from gemma_scope_ext.pretrained.loader import ParamsFileError, from_pretrained
from gemma_scope_ext.pretrained.sae_lens_route import original_loader
from gemma_scope_ext.saes import GemmaScopeSAE, GemmaScopeTranscoder
from gemma_scope_ext.saes.skip_transcoder import GemmaScopeSkipTranscoder
from tests.helpers.hf_cache import use_hub_cache, write_safetensors

M = "gemma-3-270m"  # d_model 640, 4 heads x 256: attention SAEs read 1024 wide
CASES = {
    "res": ("gemma-scope-2-270m-pt-res", "layer_12_width_16k_l0_medium"),
    "mlp": ("gemma-scope-2-270m-pt-mlp", "layer_12_width_16k_l0_medium"),
    "att": ("gemma-scope-2-270m-pt-att", "layer_12_width_16k_l0_medium"),
    "transcoder": ("gemma-scope-2-270m-it-transcoders", "transcoder/layer_9_width_16k_l0_small"),
    "skip": ("gemma-scope-2-270m-it-transcoders", "transcoder/layer_9_width_16k_l0_small_affine"),
}
HOOKS = {
    "res": ("blocks.12.hook_resid_post", None),
    "mlp": ("blocks.12.hook_mlp_out", None),
    "att": ("blocks.12.attn.hook_z", None),
    "transcoder": ("blocks.9.mlp.hook_in", "blocks.9.hook_mlp_out"),
    "skip": ("blocks.9.mlp.hook_in", "blocks.9.hook_mlp_out"),
}
CLASSES = {"res": GemmaScopeSAE, "mlp": GemmaScopeSAE, "att": GemmaScopeSAE,
           "transcoder": GemmaScopeTranscoder, "skip": GemmaScopeSkipTranscoder}  # fmt: skip


@pytest.fixture
def hub(tmp_path, monkeypatch):
    return use_hub_cache(tmp_path, monkeypatch)


def fabricate(monkeypatch, release: str, sae_id: str, width: int = 40):
    entry = dataclasses.replace(get_entry(release, sae_id), width=width)
    monkeypatch.setitem(catalog._load()[1][release], sae_id, entry)
    return entry


def file_tensors(entry, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the file's names; about a third of latents fire on unit inputs."""
    g = torch.Generator().manual_seed(seed)
    d_in, d_out, n = entry.d_in, entry.d_out, entry.width
    t = {
        "w_enc": torch.randn(d_in, n, generator=g) / d_in**0.5,
        "w_dec": torch.randn(n, d_out, generator=g) / n**0.5,
        "b_enc": 0.1 * torch.randn(n, generator=g),
        "b_dec": torch.randn(d_out, generator=g),
        "threshold": 0.8 * torch.rand(n, generator=g),
    }
    if entry.skip:
        t["affine_skip_connection"] = torch.randn(d_in, d_out, generator=g) / d_in**0.5
    return t


def reference(t: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents, output) in float64, straight from the file's tensors."""
    p = {k: v.double() for k, v in t.items()}
    x = x.double()
    z = x @ p["w_enc"] + p["b_enc"]
    f = z * (z > p["threshold"])
    y = f @ p["w_dec"] + p["b_dec"]
    if "affine_skip_connection" in p:
        y = y + x @ p["affine_skip_connection"]  # stored [d_in, d_out]
    return f, y


def local_shapes(monkeypatch, hub):
    """Point SAELens's header lookup (an HTTP range request) at the cached file."""
    from huggingface_hub import hf_hub_download
    from sae_lens.loading import pretrained_sae_loaders

    def shapes(repo_id, filename):
        with safe_open(hf_hub_download(repo_id, filename, cache_dir=str(hub)), "pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}

    monkeypatch.setattr(pretrained_sae_loaders, "get_safetensors_tensor_shapes", shapes)


def test_real_shape_resid_sae_loads_through_both_routes(hub):
    release, sae_id = CASES["res"]
    entry = get_entry(release, sae_id)
    t = file_tensors(entry)
    assert t["w_enc"].shape == (640, 16384)
    write_safetensors(hub, entry.repo_id, entry.path, t)
    x = torch.randn(5, 640, generator=torch.Generator().manual_seed(1))
    f_ref, y_ref = reference(t, x)
    for sae in (from_pretrained(release, sae_id), sae_lens.SAE.from_pretrained(release, sae_id)):
        assert type(sae) is GemmaScopeSAE
        meta = sae.cfg.metadata
        assert (meta.hook_name, meta.model_name) == ("blocks.12.hook_resid_post", M)
        assert meta.neuronpedia_id == "gemma-3-270m/12-gemmascope-2-res-16k"
        with torch.no_grad():
            f = sae.encode(x)
            assert (f > 0).float().mean() > 0.05  # latents fire: the comparison is not vacuous
            torch.testing.assert_close(f.double(), f_ref, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(sae.decode(f).double(), y_ref, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("kind", list(CASES))
def test_every_site_loads_with_its_hooks_and_weights_through_both_routes(hub, monkeypatch, kind):
    release, sae_id = CASES[kind]
    entry = fabricate(monkeypatch, release, sae_id)
    t = file_tensors(entry)
    write_safetensors(hub, entry.repo_id, entry.path, t)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 7, entry.d_in, generator=g)
    f_ref, y_ref = reference(t, x)
    hook_in, hook_out = HOOKS[kind]
    ours = from_pretrained(release, sae_id)
    via_sae_lens = sae_lens.SAE.from_pretrained(release, sae_id)
    for sae in (ours, via_sae_lens):
        assert type(sae) is CLASSES[kind]
        assert sae.cfg.metadata.hook_name == hook_in
        assert getattr(sae.cfg.metadata, "hook_name_out", None) == hook_out
        with torch.no_grad():
            if kind == "att":
                # hook_z is [batch, pos, head, d_head]: read flattened head-major, written back 4-d
                z = x.reshape(3, 7, 4, 256)
                out = sae(z)
                assert out.shape == z.shape
                torch.testing.assert_close(out.reshape(3, 7, -1).double(), y_ref, atol=1e-4, rtol=1e-5)
                continue
            out = sae(x)
            torch.testing.assert_close(sae.encode(x).double(), f_ref, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.double(), y_ref, atol=1e-4, rtol=1e-5)
    if kind == "skip":
        torch.testing.assert_close(ours.W_skip, t["affine_skip_connection"].T)
        # Without the skip path the output is wrong by x A: the check above sees it.
        no_skip = (ours.decode(ours.encode(x)) - y_ref.float()).abs().max()
        assert no_skip > 0.1


def test_sae_lens_own_loader_gives_the_wrong_transcoder_hook_and_a_4d_shape_error(hub, monkeypatch):
    local_shapes(monkeypatch, hub)
    loader = original_loader("gemma_3")
    for kind in ("transcoder", "att"):
        release, sae_id = CASES[kind]
        entry = fabricate(monkeypatch, release, sae_id)
        write_safetensors(hub, entry.repo_id, entry.path, file_tensors(entry))
        cfg, state, _ = loader(entry.repo_id, entry.path, device="cpu")
        if kind == "transcoder":
            # The residual before the pre-MLP norm, and a hook that never fires by default...
            assert (cfg["hook_name"], cfg["hook_name_out"]) == ("blocks.9.hook_mlp_in",
                                                                "blocks.9.hook_mlp_out")  # fmt: skip
            # ...while this package's route names the MLP's real input.
            assert from_pretrained(release, sae_id).cfg.metadata.hook_name == "blocks.9.mlp.hook_in"
        else:
            assert cfg["reshape_activations"] == "none"
            stock = sae_lens.saes.jumprelu_sae.JumpReLUSAE.from_dict(cfg)
            stock.load_state_dict(state)
            with pytest.raises(RuntimeError):  # 4-d hook_z against a [1024, d_sae] encoder
                stock.encode(torch.randn(2, 3, 4, 256))
            ours = sae_lens.SAE.from_pretrained(release, sae_id)
            assert ours.encode(torch.randn(2, 3, 4, 256)).shape == (2, 3, 40)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("threshold"), r"holds tensors \['b_dec', 'b_enc', 'w_dec', 'w_enc'\]"),
    (lambda t: t.update(extra=torch.zeros(1)), "holds tensors .*'extra'"),
    (lambda t: t.update(w_enc=t["w_enc"].T.contiguous()), r"w_enc is F32 \(40, 640\); expected .*"
                                                           r"\(640, 40\)"),
    (lambda t: t.update(b_dec=t["b_dec"].to(torch.int32)), "b_dec is I32"),
])  # fmt: skip
def test_wrong_files_are_refused_naming_what_is_wrong(hub, monkeypatch, change, message):
    release, sae_id = CASES["res"]
    entry = fabricate(monkeypatch, release, sae_id)
    t = file_tensors(entry)
    change(t)
    write_safetensors(hub, entry.repo_id, entry.path, t)
    with pytest.raises(ParamsFileError, match=message):
        from_pretrained(release, sae_id)


def test_a_skip_transcoder_file_without_its_skip_connection_is_refused(hub, monkeypatch):
    release, sae_id = CASES["skip"]
    entry = fabricate(monkeypatch, release, sae_id)
    t = file_tensors(entry)
    t.pop("affine_skip_connection")
    write_safetensors(hub, entry.repo_id, entry.path, t)
    with pytest.raises(ParamsFileError, match="expected .*'affine_skip_connection'"):
        from_pretrained(release, sae_id)


def test_verify_checks_the_blob_and_bf16_files_load_as_float32(hub, monkeypatch):
    release, sae_id = CASES["mlp"]
    entry = fabricate(monkeypatch, release, sae_id)
    t = {k: v.to(torch.bfloat16) for k, v in file_tensors(entry).items()}
    link = write_safetensors(hub, entry.repo_id, entry.path, t)
    sae = from_pretrained(release, sae_id, verify=True)
    assert sae.W_enc.dtype == torch.float32 and torch.equal(sae.W_enc, t["w_enc"].float())
    blob = link.resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1  # one bit of the last weight: the header still parses
    blob.write_bytes(bytes(data))
    from_pretrained(release, sae_id)  # unchecked: loads
    with pytest.raises(ParamsFileError, match="damaged"):
        from_pretrained(release, sae_id, verify=True)


def test_importing_the_package_routes_gemma_3():
    from sae_lens.loading.pretrained_sae_loaders import NAMED_PRETRAINED_SAE_LOADERS

    assert gemma_scope_ext  # imported above: the route is registered
    assert NAMED_PRETRAINED_SAE_LOADERS["gemma_3"] is not original_loader("gemma_3")


def test_cli_download_then_info(hub, monkeypatch, capsys):
    import gemma_scope_cli

    release, sae_id = CASES["skip"]
    entry = fabricate(monkeypatch, release, sae_id)
    link = write_safetensors(hub, entry.repo_id, entry.path, file_tensors(entry))
    assert gemma_scope_cli.main(["download", release, sae_id, "--verify"]) == 0
    out = capsys.readouterr().out
    assert f"params.safetensors: {link}" in out and "not needed (safetensors" in out
    assert gemma_scope_cli.main(["info", release, sae_id]) == 0
    out = capsys.readouterr().out
    assert "hook:        blocks.9.mlp.hook_in" in out and "hook out:    blocks.9.hook_mlp_out" in out
    assert "average L0:  20 (small)" in out and "W_skip (640, 640)" in out
    assert f"downloaded:  {link}" in out
    assert (f"file:        https://huggingface.co/google/gemma-scope-2-270m-it/blob/main/"
            f"{entry.path}/params.safetensors") in out  # fmt: skip
