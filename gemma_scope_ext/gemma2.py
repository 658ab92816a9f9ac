"""Loading Gemma 2 as a TransformerLens ``HookedTransformer``: the embedded tiny model and the real ones.

The tiny model (``tiny_gemma2()``) is a Hugging Face ``Gemma2ForCausalLM`` with the real architecture at
toy size (4 layers, GQA, sliding window 16, soft caps, query_pre_attn_scalar != head_dim), trained
briefly on Python standard-library docstrings by ``tools/make_tiny_gemma2.py``. It is converted with
TransformerLens's own Gemma weight conversion, so it exercises exactly the code path real Gemma 2
weights take.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

from gemma_scope_ext.models import TINY_MODEL_NAME, Gemma2Spec, get_spec

__all__ = ["hooked_from_hf", "load_gemma2", "tiny_gemma2", "tiny_gemma2_hf", "tiny_spec"]


def tiny_dir() -> Path:
    """Folder of the embedded tiny model (HF config, safetensors weights, tokenizer)."""
    return Path(str(files("gemma_scope_ext") / "data" / "tiny_gemma2"))


@lru_cache(maxsize=1)
def _tiny_config_json() -> dict[str, Any]:
    return json.loads((tiny_dir() / "config.json").read_text())


def tiny_spec() -> Gemma2Spec:
    """Shapes of the embedded tiny Gemma 2, read from its config."""
    c = _tiny_config_json()
    return Gemma2Spec(
        name=TINY_MODEL_NAME,
        d_model=c["hidden_size"],
        n_layers=c["num_hidden_layers"],
        n_heads=c["num_attention_heads"],
        d_head=c["head_dim"],
        n_key_value_heads=c["num_key_value_heads"],
        d_mlp=c["intermediate_size"],
        attn_scale=c["query_pre_attn_scalar"] ** 0.5,
        d_vocab=c["vocab_size"],
    )


def tiny_tokenizer():
    """The tiny model's Gemma-style tokenizer (pad 0, eos 1, bos 2, unk 3, byte fallback)."""
    from transformers import AutoTokenizer

    # name_or_path is the folder, so TransformerLens can re-open it with add_bos_token=True.
    return AutoTokenizer.from_pretrained(str(tiny_dir()))


def tiny_gemma2_hf(dtype: torch.dtype = torch.float32):
    """The tiny model as a Hugging Face ``Gemma2ForCausalLM`` (eager attention, for soft-capping)."""
    from transformers import Gemma2ForCausalLM

    model = Gemma2ForCausalLM.from_pretrained(
        str(tiny_dir()), attn_implementation="eager", dtype=dtype
    )
    return model.eval()


def tl_config_from_hf(hf_config: Any, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """A ``HookedTransformerConfig`` for a Gemma 2 HF config of any size.

    Starts from TransformerLens's hard-coded gemma-2-2b entry (so every structural flag is the one TL
    uses for the real model) and replaces the sizes with the HF config's.
    """
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import convert_hf_model_config

    cfg = convert_hf_model_config("google/gemma-2-2b")
    attn_types = {"sliding_attention": "local", "full_attention": "global"}
    cfg.update(
        d_model=hf_config.hidden_size,
        d_head=hf_config.head_dim,
        n_heads=hf_config.num_attention_heads,
        n_key_value_heads=hf_config.num_key_value_heads,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=hf_config.max_position_embeddings,
        d_vocab=hf_config.vocab_size,
        eps=hf_config.rms_norm_eps,
        window_size=hf_config.sliding_window,
        attn_types=[attn_types[t] for t in hf_config.layer_types],
        attn_scale=float(hf_config.query_pre_attn_scalar) ** 0.5,
        attn_scores_soft_cap=hf_config.attn_logit_softcapping,
        output_logits_soft_cap=hf_config.final_logit_softcapping,
        rotary_base=float(hf_config.rope_parameters["rope_theta"]),
        model_name=TINY_MODEL_NAME if hf_config.hidden_size < 512 else "gemma-2-custom",
        tokenizer_name=None,
        dtype=dtype,
        device=device,
    )
    return HookedTransformerConfig(**cfg)


def hooked_from_hf(hf_model: Any, tokenizer: Any = None, *, dtype=torch.float32, device="cpu"):
    """Convert an HF ``Gemma2ForCausalLM`` with TransformerLens's Gemma conversion, unprocessed.

    No LayerNorm folding or weight centring: activations are raw, as Gemma Scope saw them.
    """
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions.gemma import convert_gemma_weights

    cfg = tl_config_from_hf(hf_model.config, dtype=dtype, device=device)
    state_dict = convert_gemma_weights(hf_model, cfg)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    return model.to(device).eval()


def tiny_gemma2(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """The embedded tiny Gemma 2 as a ``HookedTransformer`` with its tokenizer; offline, ~1 s."""
    return hooked_from_hf(tiny_gemma2_hf(dtype), tiny_tokenizer(), dtype=dtype, device=str(device))


def load_gemma2(
    name: str = "gemma-2-2b",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    **kwargs: Any,
):
    """A real Gemma 2 as an unprocessed ``HookedTransformer`` (``from_pretrained_no_processing``).

    ``name`` is a key of ``GEMMA2_MODELS`` or ``"tiny-gemma2"``. Weights come from the Hugging Face
    hub or its local cache; extra keyword arguments (e.g. ``first_n_layers``) go to TransformerLens.
    """
    spec = get_spec(name)
    if spec.name == TINY_MODEL_NAME:
        return tiny_gemma2(device or "cpu", dtype)
    from transformer_lens import HookedTransformer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return HookedTransformer.from_pretrained_no_processing(
            spec.hf_name, device=device, dtype=dtype, **kwargs
        )
    except OSError as err:  # HF raises OSError subclasses when offline or unauthorised
        raise RuntimeError(
            f"could not load {spec.hf_name}: it is neither downloadable now nor in the Hugging Face "
            "cache. Gemma 2 is a gated model: accept its licence on huggingface.co, log in "
            "(`huggingface-cli login`) and run once online, or use tiny_gemma2() offline. "
            f"Cause: {type(err).__name__}: {err}"
        ) from err
