"""The activation cache: training from it equals training live, pairs stay aligned, bad caches refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from gemma_scope_ext.activations import CacheSource, MixingBuffer, harvest, read_cache_manifest
from gemma_scope_ext.training.suite_config import SuiteConfig, SuiteEntry
from gemma_scope_ext.training.suite_runner import SuiteTrainingRunner
from gemma_scope_ext.training.suite_sources import suite_tokens
from tests.training.test_suite import BATCH, SPECIAL, suite_cfg, trained_weights, two_entries

HOOK_IN, HOOK_OUT = "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"


pytestmark = pytest.mark.usefixtures("one_thread")


def harvest_for(model, cfg: SuiteConfig, out, **kw) -> dict:
    tokens = suite_tokens(cfg.dataset, model.tokenizer, cfg.training_tokens, cfg.context_size)
    return harvest(model, tokens, kw.pop("hooks", cfg.hooks()), out, "tiny-gemma2",
                   rows_per_shard=cfg.store_batch_size_prompts, special_ids=SPECIAL,
                   progress=False, **kw)  # fmt: skip


def test_training_from_the_cache_equals_training_live(tiny_model, tmp_path, capsys) -> None:
    live = suite_cfg(tmp_path / "live", two_entries(), mix_fraction=0.5)
    manifest = harvest_for(tiny_model, live, tmp_path / "cache")
    assert "MiB on disk" in capsys.readouterr().err  # the disk needed, printed first
    shard = load_file(tmp_path / "cache" / manifest["shards"][0]["file"])
    assert set(shard) == set(live.hooks()) and shard[HOOK_IN].shape[1] == 128
    SuiteTrainingRunner(live, model=tiny_model, progress=False).run()
    cached = suite_cfg(tmp_path / "cached", two_entries(), mix_fraction=0.5,
                       cache_path=str(tmp_path / "cache"), shuffle_shards=False)  # fmt: skip
    SuiteTrainingRunner(cached, model=None, progress=False).run()  # no model at all
    for e in live.entries:
        a = trained_weights(tmp_path / "live" / "suite" / e.name)
        b = trained_weights(tmp_path / "cached" / "suite" / e.name)
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=0)
    # Control: reading the shards in a shuffled order trains other weights.
    shuffled = suite_cfg(tmp_path / "shuffled", two_entries(), mix_fraction=0.5,
                         cache_path=str(tmp_path / "cache"))  # fmt: skip
    SuiteTrainingRunner(shuffled, progress=False).run()
    name = live.entries[0].name
    diff = trained_weights(tmp_path / "shuffled" / "suite" / name)["W_enc"] - \
        trained_weights(tmp_path / "live" / "suite" / name)["W_enc"]  # fmt: skip
    assert diff.abs().max() > 1e-4


def mlp_of(model, x: torch.Tensor) -> torch.Tensor:
    block = model.blocks[1]
    with torch.no_grad():
        return block.ln2_post(block.mlp((x * block.ln2.w)[None]))[0]


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("bfloat16", 0.1)])
def test_transcoder_pairs_stay_aligned_through_the_cache(
    kind_model, tiny_model, tmp_path, dtype, tol
) -> None:
    cfg = suite_cfg(tmp_path, [SuiteEntry("transcoder", "transcoder", 1, 8)])
    harvest_for(kind_model, cfg, tmp_path / "cache", hooks=[HOOK_OUT, HOOK_IN], dtype=dtype)
    source = CacheSource(tmp_path / "cache", [HOOK_IN, HOOK_OUT], seed=1)
    batch = MixingBuffer(source, 4 * BATCH, 2 * BATCH, 0.5, seed=2)
    xy = torch.cat([batch.next_batch() for _ in range(3)])
    x, y = xy[:, :128], xy[:, 128:]
    err = (y - mlp_of(tiny_model, x)).abs().max()
    assert err < tol * y.abs().max()
    assert (y.roll(1, 0) - mlp_of(tiny_model, x)).abs().max() > 10 * err + 0.05  # control
    assert source.order(0).tolist() != sorted(source.order(0).tolist())  # shards shuffled
    # Special tokens were left out at harvest: each shard has fewer rows than token positions.
    m = read_cache_manifest(tmp_path / "cache")
    assert all(s["rows"] < 4 * 32 for s in m["shards"]) and m["special_token_ids"] == SPECIAL


def test_bad_caches_and_configs_are_refused(tiny_model, tmp_path) -> None:
    cfg = suite_cfg(tmp_path, [SuiteEntry("sae", "res", 0, 8)])
    folder = tmp_path / "cache"
    m = harvest_for(tiny_model, cfg, folder)
    hooks = cfg.hooks()
    with pytest.raises(ValueError, match=r"lacks hooks \['blocks.1.hook_mlp_out'\]"):
        CacheSource(folder, [*hooks, "blocks.1.hook_mlp_out"])
    with pytest.raises(ValueError, match="d_in mismatch at blocks.0.hook_resid_post"):
        CacheSource(folder, hooks, widths={hooks[0]: 96})
    with pytest.raises(ValueError, match="holds activations of 'tiny-gemma2', not 'gemma-2-2b'"):
        CacheSource(folder, hooks, model_name="gemma-2-2b")
    with pytest.raises(ValueError, match="does not match: dtype: cache has 'float32'"):
        harvest_for(tiny_model, cfg, folder, dtype="bfloat16")  # continuing with other settings
    with pytest.raises(ValueError, match="not an activation cache"):
        CacheSource(tmp_path, hooks)
    # A corrupt shard (one byte flipped), a truncated one, a foreign one.
    first = folder / m["shards"][0]["file"]
    data = bytearray(first.read_bytes())
    data[-5] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="fails its SHA-256 check"):
        CacheSource(folder, hooks, shuffle=False).next_chunk()
    first.write_bytes(bytes(data[:-8]))
    with pytest.raises(ValueError, match="is truncated or was replaced"):
        CacheSource(folder, hooks, shuffle=False).next_chunk()
    other = harvest_for(tiny_model, cfg, tmp_path / "other", dtype="bfloat16")
    foreign = tmp_path / "other" / other["shards"][0]["file"]
    first.write_bytes(foreign.read_bytes())
    m["shards"][0].update(other["shards"][0])  # listed with its own size and checksum
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="a foreign shard"):
        CacheSource(folder, hooks, shuffle=False).next_chunk()
    # Suites check the cache before any training.
    bad = suite_cfg(tmp_path / "t", [SuiteEntry("sae", "mlp", 1, 8)], cache_path=str(folder))
    with pytest.raises(ValueError, match="lacks hooks"):
        SuiteTrainingRunner(bad, progress=False).run()
