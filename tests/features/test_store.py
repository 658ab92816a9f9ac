"""Saved feature data comes back identical, and a damaged or mismatched folder is refused."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gemma_scope_ext.features import FeatureConfig, collect_features, load_features, save_features

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(planted):
    return collect_features(planted.model, planted.sae, planted.tokens[:6], progress=False,
                            config=FeatureConfig(top_k=4, n_logits=3))[0]  # fmt: skip


def test_round_trip_is_exact(data, tmp_path):
    back = load_features(save_features(data, tmp_path / "sae"))
    assert back.info == data.info and back.config == data.config and back.n_tokens == data.n_tokens
    assert back.token_strings == data.token_strings
    assert back.special_token_ids == data.special_token_ids
    for field in ("fires", "act_sum", "hist_counts", "hist_exponent"):
        assert torch.equal(getattr(back, field), getattr(data, field)), field
    for part in ("top", "sample", "output"):
        assert getattr(back, part).keys() == getattr(data, part).keys()
        for k, v in getattr(data, part).items():
            assert torch.equal(getattr(back, part)[k], v), (part, k)
    assert all(back.latent(i) == data.latent(i) for i in range(data.d_sae))


def test_changed_tensors_are_refused(data, tmp_path):
    folder = save_features(data, tmp_path / "sae")
    other = dataclasses.replace(data, fires=data.fires + 1)
    from safetensors.torch import save_file

    save_file({"fires": other.fires}, str(folder / "features.safetensors"))  # not via save_features
    with pytest.raises(ValueError, match="SHA-256"):
        load_features(folder)
    save_features(other, folder)  # a whole save is consistent again
    assert torch.equal(load_features(folder).fires, other.fires)


def test_missing_folder_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="gemma-scope features"):
        load_features(tmp_path)
