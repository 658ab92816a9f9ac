"""Shared fixtures: the embedded tiny Gemma 2 and Gemma 3 (TransformerLens and Hugging Face) and
token batches.

``kind_model`` is the tiny Gemma 2 as each TransformerLens model kind in turn (``model_kind``:
"hooked" for HookedTransformer, "bridge" for TransformerBridge); a test that takes it runs once
per kind and must pass the same reference checks on both.
"""

from __future__ import annotations

import os

# No test touches the network: every Hugging Face library is told so before it is imported.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from gemma_scope_ext.models.backend import MODEL_KINDS  # noqa: E402
from gemma_scope_ext.models.loading import (  # noqa: E402
    tiny_gemma2,
    tiny_gemma2_hf,
    tiny_gemma3,
    tiny_gemma3_hf,
)
from gemma_scope_ext.models.text import sample_tokens  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny Gemma 2 as a HookedTransformer (fp32, CPU). Do not modify it in a test."""
    torch.set_grad_enabled(True)
    return tiny_gemma2()


@pytest.fixture(scope="session")
def tiny_bridge():
    """The same tiny Gemma 2 as a TransformerBridge (raw weights, no compatibility mode)."""
    torch.set_grad_enabled(True)
    return tiny_gemma2(as_bridge=True)


@pytest.fixture(params=MODEL_KINDS)
def model_kind(request):
    """Each TransformerLens model kind in turn: "hooked", then "bridge"."""
    return request.param


@pytest.fixture
def kind_model(model_kind, tiny_model, tiny_bridge):
    """The tiny Gemma 2 as the model kind under test. Do not modify it in a test."""
    return tiny_model if model_kind == "hooked" else tiny_bridge


@pytest.fixture(scope="session")
def tiny_hf():
    """The same weights as a Hugging Face Gemma2ForCausalLM (eager attention)."""
    return tiny_gemma2_hf()


@pytest.fixture(scope="session")
def eval_tokens(tiny_model):
    """8 held-out rows of 64 tokens, each starting with BOS (longer than the sliding window)."""
    return sample_tokens(tiny_model.tokenizer, n_seqs=8, seq_len=64, split="eval")


@pytest.fixture(scope="session")
def tiny_gemma3_model():
    """The tiny Gemma 3 as a HookedTransformer (fp32, CPU, with mlp.hook_in). Do not modify it."""
    torch.set_grad_enabled(True)
    return tiny_gemma3()


@pytest.fixture(scope="session")
def tiny_gemma3_hf_model():
    """The same weights as a Hugging Face Gemma3ForCausalLM (eager attention)."""
    return tiny_gemma3_hf()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of small-matrix tests: several threads only spin there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
