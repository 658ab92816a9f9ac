"""What a feature-collection pass found for one SAE, and named per-latent views of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from gemma_scope_ext.features.config import FeatureConfig
from gemma_scope_ext.features.histogram import bin_of
from gemma_scope_ext.features.histogram import quantile_edges as _quantile_edges

__all__ = ["Context", "FeatureData", "LatentView", "QuantileBin", "SAEInfo"]

NEURONPEDIA = "https://www.neuronpedia.org"


class Context(NamedTuple):
    """One firing of a latent and the tokens around it."""

    activation: float
    """The latent's activation on the centre token."""
    row: int
    """Row of the token stream (0-based, in the order the rows were seen)."""
    position: int
    """Position of the centre token in its row."""
    token_ids: tuple[int, ...]
    """The window's token ids (``context_before`` + 1 + ``context_after``; -1 past the row)."""
    activations: tuple[float, ...]
    """The latent's activation at each window position (0 past the row and on special tokens)."""
    center: int
    """Index of the centre token in the window."""


class QuantileBin(NamedTuple):
    """Firings whose activation falls in one equal-mass bin [low, high)."""

    low: float
    """Lowest activation of the bin (an edge of the histogram)."""
    high: float
    """Upper bound of the bin (exclusive)."""
    fraction: float
    """Share of the latent's firings in the bin (exact, from the histogram)."""
    examples: tuple[Context, ...]
    """Uniformly sampled firings in the bin."""


class LatentView(NamedTuple):
    """Everything a dashboard page shows about one latent."""

    index: int
    """The latent's number."""
    density: float
    """Fraction of non-special tokens on which the latent fires (activation > 0)."""
    max_activation: float
    """Largest activation seen (0 if it never fires)."""
    mean_activation: float
    """Mean activation over the tokens where it fires (0 if it never fires)."""
    top: tuple[Context, ...]
    """Top activating contexts, strongest first (exact over the whole pass)."""
    quantiles: tuple[QuantileBin, ...]
    """Equal-mass bins of the firings (empty bins left out), lowest first, with examples."""
    histogram: tuple[tuple[int, ...], float]
    """Counts of ``n_bins`` equal bins and the upper edge of the last one (bins start at 0)."""
    promoted: tuple[tuple[int, float], ...]
    """(token id, score) the decoder direction pushes up most; empty without an output view."""
    suppressed: tuple[tuple[int, float], ...]
    """(token id, score) it pushes down most, most negative first."""
    head_norms: tuple[float, ...] | None
    """Decoder norm per attention head, for attention SAEs."""
    neuronpedia_url: str | None
    """The latent's Neuronpedia page, for released SAEs."""


@dataclass(frozen=True)
class SAEInfo:
    """Which SAE the data describes."""

    name: str
    """Display name (a folder name or a release's SAE id)."""
    hook_name: str
    """Hook the SAE reads."""
    hook_name_out: str
    """Hook its output stands for (equal to ``hook_name`` except for transcoders)."""
    site: str
    """Gemma Scope site (``res``, ``mlp``, ``att``, ``embedding``, ``transcoder``) or the hook."""
    layer: int | None
    """Block index, None outside the blocks."""
    model_name: str
    """Model the activations came from."""
    neuronpedia_id: str | None = None
    """Neuronpedia id of a released SAE (e.g. ``gemma-2-2b/20-gemmascope-res-16k``)."""


@dataclass(frozen=True)
class FeatureData:
    """Per-latent records of one SAE over ``n_tokens`` non-special tokens (all on the CPU)."""

    info: SAEInfo
    """Which SAE this is."""
    config: FeatureConfig
    """What was recorded per latent."""
    n_tokens: int
    """Non-special tokens seen (the denominator of densities)."""
    fires: Int[Tensor, " d_sae"]
    """Tokens each latent fired on."""
    act_sum: Float[Tensor, " d_sae"]
    """Sum of each latent's activations (float64)."""
    hist_counts: Int[Tensor, "d_sae n_bins"]
    hist_exponent: Int[Tensor, " d_sae"]
    """Histogram range [0, 2^exponent); meaningless where the latent never fired."""
    top: dict[str, Tensor]
    """Top-k slots, strongest first: ``value, row, pos`` [d_sae, k], ``tokens, acts``
    [d_sae, k, window]; unused slots have row -1."""
    sample: dict[str, Tensor]
    """The uniform reservoir, lowest key first, same fields as ``top``."""
    output: dict[str, Tensor] = field(default_factory=dict)
    """``promoted_ids/values``, ``suppressed_ids/values`` [d_sae, n_logits] and ``head_norms``
    [d_sae, n_heads] where known; empty when the output side has no residual reading."""
    token_strings: dict[int, str] = field(default_factory=dict)
    """Text of every token id that appears in a context or the output view."""
    special_token_ids: tuple[int, ...] = ()
    """Ids that were excluded (BOS, EOS, pad): they appear in contexts but never fire."""

    @property
    def d_sae(self) -> int:
        return int(self.fires.shape[0])

    @property
    def density(self) -> Float[Tensor, " d_sae"]:
        return self.fires.double() / self.n_tokens

    @property
    def max_activation(self) -> Float[Tensor, " d_sae"]:
        return torch.where(self.top["row"][:, 0] >= 0, self.top["value"][:, 0], 0.0)

    @property
    def mean_activation(self) -> Float[Tensor, " d_sae"]:
        return self.act_sum / self.fires.clamp(min=1)

    @cached_property
    def quantile_edges(self) -> Int[Tensor, "d_sae q"]:
        """Histogram-bin edges of the equal-mass bins, [d_sae, n_quantiles + 1]."""
        return _quantile_edges(self.hist_counts, self.config.n_quantiles)

    @cached_property
    def quantile_examples(self) -> Int[Tensor, "d_sae q per"]:
        """Reservoir slots chosen for each quantile bin (-1 where the bin has too few)."""
        cfg, d = self.config, self.d_sae
        edges = self.quantile_edges
        valid = self.sample["row"] >= 0
        exponent = torch.where(self.fires > 0, self.hist_exponent, 0)  # unset where never fired
        hb = bin_of(self.sample["value"], exponent[:, None].expand_as(valid), cfg.n_bins)
        qbin = torch.searchsorted(edges[:, 1:-1].contiguous(), hb.contiguous(), right=True)
        out = torch.full((d, cfg.n_quantiles, cfg.per_quantile), -1, dtype=torch.long)
        for q in range(cfg.n_quantiles):
            hit = valid & (qbin == q) & (edges[:, q : q + 1] < edges[:, q + 1 : q + 2])
            rank = hit.long().cumsum(1) - 1  # slots are in key order: the first ones are uniform
            take = hit & (rank < cfg.per_quantile)
            lat, slot = take.nonzero(as_tuple=True)
            out[lat, q, rank[lat, slot]] = slot
        return out

    def _context(self, part: dict[str, Tensor], i: int, j: int) -> Context:
        return Context(float(part["value"][i, j]), int(part["row"][i, j]), int(part["pos"][i, j]),
                       tuple(part["tokens"][i, j].tolist()), tuple(part["acts"][i, j].tolist()),
                       self.config.context_before)  # fmt: skip

    def _tokens(self, kind: str, i: int) -> tuple[tuple[int, float], ...]:
        if f"{kind}_ids" not in self.output:
            return ()
        ids, values = self.output[f"{kind}_ids"][i], self.output[f"{kind}_values"][i]
        return tuple(zip(ids.tolist(), values.tolist(), strict=True))

    def neuronpedia_url(self, index: int) -> str | None:
        """The latent's Neuronpedia page, for SAEs Neuronpedia hosts."""
        np_id = self.info.neuronpedia_id
        return f"{NEURONPEDIA}/{np_id}/{index}" if np_id else None

    def latent(self, index: int) -> LatentView:
        """The named view of latent ``index`` (what its dashboard page shows)."""
        if not 0 <= index < self.d_sae:
            raise IndexError(f"latent {index} out of range: the SAE has {self.d_sae} latents")
        cfg, i = self.config, index
        top = tuple(self._context(self.top, i, j) for j in range(cfg.top_k)
                    if self.top["row"][i, j] >= 0)  # fmt: skip
        edges, picks = self.quantile_edges[i].tolist(), self.quantile_examples[i]
        width = 2.0 ** int(self.hist_exponent[i]) / cfg.n_bins if self.fires[i] > 0 else 0.0
        cum = [0, *self.hist_counts[i].cumsum(0).tolist()]
        total = max(cum[-1], 1)
        bins = tuple(
            QuantileBin(lo * width, hi * width, (cum[hi] - cum[lo]) / total,
                        tuple(self._context(self.sample, i, s) for s in picks[q].tolist() if s >= 0))
            for q, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)) if hi > lo
        )  # fmt: skip
        heads = self.output.get("head_norms")
        return LatentView(
            index=i, density=float(self.density[i]), max_activation=float(self.max_activation[i]),
            mean_activation=float(self.mean_activation[i]), top=top, quantiles=bins,
            histogram=(tuple(self.hist_counts[i].tolist()), width * cfg.n_bins),
            promoted=self._tokens("promoted", i), suppressed=self._tokens("suppressed", i),
            head_norms=None if heads is None else tuple(heads[i].tolist()),
            neuronpedia_url=self.neuronpedia_url(i),
        )  # fmt: skip
