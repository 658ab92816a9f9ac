"""One streaming pass of a model over tokens, recording per latent what a feature dashboard shows.

The model runs clean (nothing is replaced: Neuronpedia-style dashboards describe the model's own
activations) and stops after the last block any SAE reads. Each SAE encodes its input hook's
activation (``hook_z`` flattened head-major; a transcoder its ``hook_name`` input), special tokens
(BOS, EOS, pad) are zeroed, and a :class:`LatentRecorder` per SAE folds the batch's firings into
bounded per-latent state: firing counts, a doubling histogram, the exact top-k contexts and a
seeded uniform reservoir for the quantile examples. Nothing is kept per token.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from gemma_scope_ext.evals.metrics import special_ids
from gemma_scope_ext.evals.passes import (
    block_of,
    flat,
    flat_inputs,
    recording,
    resumable,
    sae_site,
)
from gemma_scope_ext.features.config import MAX_TOKENS, FeatureConfig
from gemma_scope_ext.features.histogram import DoublingHistogram
from gemma_scope_ext.features.ranked import RankedBuffer, Window, activation_score, reservoir_score

__all__ = ["FeaturePass", "LatentRecorder", "collect_latents", "stop_layer"]


class LatentRecorder:
    """Bounded per-latent statistics of one SAE over a stream of batches."""

    def __init__(self, d_sae: int, config: FeatureConfig, device: torch.device | str) -> None:
        self.config = config
        self.d_sae = d_sae
        self.n_tokens = 0
        """Non-special tokens seen (the denominator of every density)."""
        self.n_seen = 0
        """Token positions seen, special ones included (the stream index of the next token)."""
        self.n_rows = 0
        self.special_token_ids: tuple[int, ...] = ()
        """Ids excluded from every record (set by :func:`collect_latents`)."""
        self.fires = torch.zeros(d_sae, dtype=torch.int64, device=device)
        self.act_sum = torch.zeros(d_sae, dtype=torch.float64, device=device)
        self.hist = DoublingHistogram(d_sae, config.n_bins, device)
        self.top = RankedBuffer(d_sae, config.top_k, config.window, device)
        self.sample = RankedBuffer(d_sae, config.reservoir, config.window, device)

    def add(
        self,
        acts: Float[Tensor, "batch pos d_sae"],
        tokens: Int[Tensor, "batch pos"],
        keep: Tensor,
    ) -> None:
        """Fold one batch in; ``keep`` [batch, pos] marks the non-special tokens."""
        batch, n_pos = tokens.shape
        if self.n_seen + batch * n_pos > MAX_TOKENS:
            raise ValueError(f"a pass indexes at most {MAX_TOKENS:,} tokens; split the stream")
        acts = acts.float().masked_fill(~keep[..., None], 0.0)  # special tokens never fire
        flat_acts = acts.view(batch * n_pos, self.d_sae)
        flat, latent = (flat_acts > 0).nonzero(as_tuple=True)
        value = flat_acts[flat, latent]
        self.fires += torch.bincount(latent, minlength=self.d_sae)
        self.act_sum.index_add_(0, latent, value.double())
        self.hist.add(latent, value)
        index = self.n_seen + flat
        row, pos = self.n_rows + flat // n_pos, flat % n_pos
        cfg = self.config
        window = Window(tokens, acts, cfg.context_before, cfg.context_after)
        self.top.offer(latent, activation_score(value, index), value, row, pos, flat, window)
        self.sample.offer(latent, reservoir_score(index, latent, cfg.seed), value, row, pos,
                          flat, window)  # fmt: skip
        self.n_tokens += int(keep.sum())
        self.n_seen += batch * n_pos
        self.n_rows += batch

    def state_bytes(self) -> int:
        """Bytes of every tensor this recorder holds (measured, not computed from the config)."""
        seen: set[int] = set()

        def walk(obj: Any) -> int:
            if isinstance(obj, Tensor):
                if id(obj) in seen:
                    return 0
                seen.add(id(obj))
                return obj.numel() * obj.element_size()
            if isinstance(obj, (list, tuple, set)):
                return sum(walk(o) for o in obj)
            if isinstance(obj, dict):
                return sum(walk(o) for o in obj.values())
            if hasattr(obj, "__dict__") and not isinstance(obj, (type, FeatureConfig)):
                return sum(walk(o) for o in vars(obj).values())
            return 0

        return walk(self)


def stop_layer(model: Any, hooks: Iterable[str]) -> int | None:
    """Blocks to run so that every hook fires (0: only the embedding); None runs the whole model."""
    blocks = [-1 if h in ("hook_embed", "hook_pos_embed") else block_of(h) for h in hooks]
    if not resumable(model) or None in blocks:
        return None
    return max(b for b in blocks if b is not None) + 1


def _check_saes(model: Any, saes: Sequence[Any]) -> list[str]:
    hooks = []
    for sae in saes:
        hook_in = sae_site(sae).hook_in
        if hook_in not in model.hook_dict:
            raise ValueError(
                f"{type(sae).__name__} reads {hook_in!r}, which this model does not have; set "
                "cfg.metadata.hook_name to a name in model.hook_dict (e.g. 'blocks.2.hook_resid_post')"
            )
        hooks.append(hook_in)
    return hooks


class FeaturePass:
    """The pass, one batch at a time: ``with FeaturePass(...) as p: p.step(batch)``.

    Inside the block SAELens's own hook_z reshaping is off (the pass flattens ``hook_z`` itself).
    """

    def __init__(self, model: Any, saes: Sequence[Any], config: FeatureConfig,
                 special_token_ids: Sequence[int] | None = None) -> None:  # fmt: skip
        if len(saes) == 0:
            raise ValueError("no SAEs given; pass at least one SAE or transcoder")
        self.model, self.saes = model, list(saes)
        self.hooks = _check_saes(model, self.saes)
        self.ignore = special_ids(model, special_token_ids).to(model.cfg.device)
        self.stop = stop_layer(model, self.hooks)
        self.recorders = [LatentRecorder(int(sae.cfg.d_sae), config, model.cfg.device)
                          for sae in self.saes]  # fmt: skip
        for rec in self.recorders:
            rec.special_token_ids = tuple(self.ignore.tolist())
        self._flat = flat_inputs(self.saes)

    def __enter__(self) -> FeaturePass:
        self._flat.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._flat.__exit__(*exc)

    @torch.no_grad()
    def step(self, batch: Tensor) -> None:
        """Run the model on one batch of token rows and fold every SAE's latents in."""
        batch = torch.as_tensor(batch)
        if batch.ndim != 2 or batch.dtype not in (torch.long, torch.int32):
            raise ValueError(
                f"token batches must be integer [batch, pos] tensors, got "
                f"{tuple(batch.shape)} {batch.dtype}"
            )
        device = self.model.cfg.device
        batch = batch.to(device)
        keep = ~torch.isin(batch, self.ignore)
        cache: dict[str, Tensor] = {}
        self.model.run_with_hooks(batch, stop_at_layer=self.stop, return_type=None,
                                  fwd_hooks=recording(cache, set(self.hooks)))  # fmt: skip
        for sae, hook, rec in zip(self.saes, self.hooks, self.recorders, strict=True):
            x = flat(cache[hook])
            if x.shape[-1] != sae.cfg.d_in:
                raise ValueError(
                    f"{hook} gives width {x.shape[-1]} but the SAE expects d_in "
                    f"{sae.cfg.d_in}; is the SAE meant for this model and hook?"
                )
            acts = sae.encode(x.to(device=sae.W_enc.device, dtype=sae.W_enc.dtype))
            rec.add(acts.to(device), batch, keep)


def collect_latents(
    model: Any,
    saes: Sequence[Any],
    batches: Iterable[Tensor],
    config: FeatureConfig,
    *,
    special_token_ids: Sequence[int] | None = None,
    progress: bool = True,
    total: int | None = None,
) -> list[LatentRecorder]:
    """Run ``model`` over ``batches`` (integer [batch, pos] tensors) and record every SAE's latents.

    ``total`` (rows) sizes the progress bar when ``batches`` has no length.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="collecting features", unit="row", disable=not progress)
    with FeaturePass(model, saes, config, special_token_ids) as run, bar:
        for batch in batches:
            run.step(batch)
            bar.update(len(batch))
    if run.recorders[0].n_tokens == 0:
        raise ValueError("no non-special tokens were seen; rows need tokens besides BOS/EOS/pad")
    return run.recorders
