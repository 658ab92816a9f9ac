"""Splicing SAEs and transcoders into a TransformerLens model through its hook points.

``splice(model, saes)`` swaps the ``HookPoint`` at each SAE's output hook for an ``SAEHookPoint``
that runs the SAE, and (for a transcoder) the input hook for one that remembers what it saw. Both
are still ``HookPoint``s, so ``run_with_cache``, ``run_with_hooks``, ``hooks()`` and ``generate``
keep working, on a HookedTransformer and a TransformerBridge alike (``models/backend.py`` does the
swap), and each spliced site gains the child hooks SAELens's ``HookedSAETransformer`` names
(``<hook>.hook_sae_input``, ``.hook_sae_acts_post``, ``.hook_sae_error``, ``.hook_sae_output``).

With the error term on, a site's output is ``decode(f) + e`` with ``e = x - decode(f_clean)``; the
error keeps its autograd path to ``x``, and ``f`` reaches the decoder through its own node, so:
the forward value is exactly the clean one, gradients upstream of the site are the clean model's,
and the gradient at the feature node is its total effect downstream. Editing the features through
``hook_sae_acts_post`` moves the output, as in SAELens.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from gemma_scope_ext.models.backend import (
    check_writable,
    is_bridge,
    replace_hook_points,
    restore_hook_points,
)
from gemma_scope_ext.models.families import FAMILIES

__all__ = ["SAEHookPoint", "SiteNodes", "Splice", "SplicedSite", "site_of", "skip_term", "splice"]


def site_of(hook: str) -> tuple[str, int | None]:
    """Gemma Scope's (site, layer) for an SAE input hook; other hooks give (hook, layer or None).

    >>> site_of("blocks.3.ln2.hook_normalized")
    ('transcoder', 3)
    """
    for site in (s for family in FAMILIES.values() for s in family.sites.values()):
        pattern = re.escape(site.hook_in).replace(re.escape("{layer}"), r"(\d+)")
        match = re.fullmatch(pattern, hook)
        if match:
            return site.name, int(match.group(1)) if site.per_layer else None
    match = re.match(r"blocks\.(\d+)\.", hook)
    return hook, int(match.group(1)) if match else None


class SiteNodes(NamedTuple):
    """What one spliced SAE saw and made in the latest forward pass (flattened like its input)."""

    sae_in: Float[Tensor, "batch pos d_in"]
    """The SAE input (``hook_z`` flattened head-major for attention sites)."""
    features: Float[Tensor, "batch pos d_sae"]
    """The feature activations that fed the decoder (after any hook on ``hook_sae_acts_post``)."""
    error: Float[Tensor, "batch pos d_out"] | None
    """``x - decode(f_clean)``, or None when the error term is off."""


class _CaptureHookPoint(HookPoint):
    """A transcoder's input hook: an ordinary HookPoint that remembers its value after its hooks."""

    def __init__(self, keep_graph: bool = False) -> None:
        super().__init__()
        self.captured: Tensor | None = None
        if keep_graph:
            # A bridge norm computes its hook values without autograd unless a forward hook is
            # attached; one that changes nothing keeps the transcoder input on the graph.
            self.add_hook(lambda x, hook: None, is_permanent=True)

    def __call__(self, x: Tensor) -> Tensor:
        # Captured after the hooks run, so patching the input through hooks reaches the transcoder.
        out = super().__call__(x)
        self.captured = out
        return out


class _CleanValue(torch.autograd.Function):
    """Forward: the clean activation exactly. Backward: the gradient of ``x_hat + error``."""

    @staticmethod
    def forward(spliced: Tensor, clean: Tensor) -> Tensor:
        return clean.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def skip_term(sae: Any, sae_in: Tensor) -> Tensor | float:
    """``x W_skip^T`` of a skip transcoder (SAELens's ``W_skip`` [d_out, d_in]), else 0.

    It is part of the transcoder's output, not of its error, and stays live in ``x``."""
    w_skip = getattr(sae, "W_skip", None)
    return 0.0 if w_skip is None else sae_in.to(w_skip.dtype) @ w_skip.T


class SAEHookPoint(HookPoint):
    """Stands in for the HookPoint at an SAE's output hook and returns the SAE's output there.

    Hooks on this point itself see (and may change) the value that flows on, as at any HookPoint.
    """

    def __init__(self, sae: Any, use_error_term: bool, capture: _CaptureHookPoint | None) -> None:
        super().__init__()
        # Kept out of the module tree so the SAE's own hooks do not join the model's hook_dict.
        self.__dict__["sae"] = sae
        self.__dict__["capture"] = capture
        self.use_error_term = use_error_term
        self.leaf_nodes = False
        """When True, features and error enter as detached leaves (the frozen graph's sources)."""
        self.nodes: SiteNodes | None = None
        self.hook_sae_input = HookPoint()  # [batch, pos, d_in]
        self.hook_sae_acts_post = HookPoint()  # [batch, pos, d_sae]
        self.hook_sae_error = HookPoint()  # [batch, pos, d_out]
        self.hook_sae_output = HookPoint()  # [batch, pos, d_out]

    def forward(self, x: Tensor) -> Tensor:
        sae = self.sae
        if self.capture is None:
            sae_in = x
        elif self.capture.captured is None:
            raise RuntimeError(
                f"transcoder input hook {self.capture.name!r} did not fire before its output "
                f"hook {self.name!r}; the input hook must run earlier in the forward pass"
            )
        else:
            sae_in, self.capture.captured = self.capture.captured, None
        sae_in = self.hook_sae_input(sae_in.flatten(-2) if sae_in.ndim == 4 else sae_in)
        if sae_in.shape[-1] != sae.cfg.d_in:
            raise ValueError(
                f"SAE at {self.name!r} expects inputs of width {sae.cfg.d_in} but the hook gives "
                f"{sae_in.shape[-1]}; check that its hook_name matches the site it was trained on"
            )
        x_flat = x.flatten(-2) if x.ndim == 4 else x
        f_clean = sae.encode(sae_in)
        grad = torch.is_grad_enabled()
        if self.leaf_nodes:
            feats = f_clean.detach().requires_grad_(grad)
        else:
            # A separate node from f_clean: f_clean also feeds the error, and the gradient that
            # arrives here must be the feature's own downstream effect only.
            feats = f_clean.clone()
            if grad and not feats.requires_grad:
                feats.requires_grad_(True)
        feats_version = feats._version
        patched = self.hook_sae_acts_post(feats)
        untouched = patched is feats and feats._version == feats_version
        feats = patched
        skip = skip_term(sae, sae_in)
        out = (sae.decode(feats) + skip).to(x.dtype)
        error = None
        if self.use_error_term:
            error = x_flat - (sae.decode(f_clean) + skip).to(x.dtype)
            if self.leaf_nodes:
                error = error.detach().requires_grad_(grad)
            elif grad and not error.requires_grad:
                error.requires_grad_(True)
            error_version = error._version
            patched = self.hook_sae_error(error)
            untouched = untouched and patched is error and error._version == error_version
            error = patched
            out = out + error
            if untouched:  # x_hat + (x - x_hat) rounds; with nothing patched, pass x bit for bit
                out = _CleanValue.apply(out, x_flat)
        self.nodes = SiteNodes(sae_in, feats, error)
        out = self.hook_sae_output(out)
        return out.view(x.shape) if x.ndim == 4 else out


@dataclass(frozen=True)
class SplicedSite:
    """One SAE spliced into the model, and the hook names that reach it."""

    sae: Any
    """The SAE or transcoder."""
    hook_in: str
    """Hook it reads (``cfg.metadata.hook_name``)."""
    hook_out: str
    """Hook whose value it replaces (``hook_name_out`` for a transcoder, else ``hook_in``)."""
    site: str
    """Gemma Scope site name (``res``, ``mlp``, ``att``, ``transcoder``...) or the hook name."""
    layer: int | None
    """Block index, or None outside the blocks."""

    @property
    def acts_hook(self) -> str:
        """Hook on the feature activations; a hook here can ablate, clamp or patch features."""
        return f"{self.hook_out}.hook_sae_acts_post"

    @property
    def error_hook(self) -> str:
        """Hook on the error term (present only while the error term is on)."""
        return f"{self.hook_out}.hook_sae_error"

    @property
    def input_hook(self) -> str:
        """Hook on the SAE input, flattened."""
        return f"{self.hook_out}.hook_sae_input"

    @property
    def output_hook(self) -> str:
        """Hook on the SAE output (reconstruction plus error), flattened."""
        return f"{self.hook_out}.hook_sae_output"


class Splice:
    """Handle returned by ``splice``: the spliced sites and their nodes from the latest forward."""

    def __init__(self, model: Any, sites: tuple[SplicedSite, ...], points: dict[str, SAEHookPoint]):
        self.model = model
        self.sites = sites
        self._points = points

    def site(self, key: Any) -> SplicedSite:
        """Look a site up by SAE object, index, hook name, or ``(site, layer)``."""
        for i, s in enumerate(self.sites):
            if key is s.sae or key == i or key in (s.hook_in, s.hook_out, (s.site, s.layer)):
                return s
        known = ", ".join(f"({s.site!r}, {s.layer})" for s in self.sites)
        raise KeyError(f"no spliced SAE matches {key!r}; spliced: {known}")

    def nodes(self, key: Any) -> SiteNodes:
        """Input, features and error of a site in the latest forward pass."""
        site = self.site(key)
        nodes = self._points[site.hook_out].nodes
        if nodes is None:
            raise RuntimeError(f"no forward pass has run through {site.hook_out!r} yet")
        return nodes

    def set_leaf_nodes(self, leaf: bool) -> None:
        """Make every site's features and error detached leaves (True) or keep their graph."""
        for point in self._points.values():
            point.leaf_nodes = leaf


def _check_hook(model: Any, name: str, sae: Any) -> None:
    if name not in model.hook_dict:
        raise ValueError(
            f"{type(sae).__name__} reads or writes hook {name!r}, which this model does not have; "
            "set cfg.metadata.hook_name / hook_name_out to a name in model.hook_dict"
        )
    point = model.hook_dict[name]
    if type(point) is not HookPoint:
        raise ValueError(f"hook {name!r} already has an SAE spliced in; splice each site once")
    if point.has_hooks(including_permanent=True):
        raise ValueError(
            f"hook {name!r} has hooks attached; splice first, then add hooks inside the splice"
        )


@contextmanager
def splice(model: Any, saes: Any | Sequence[Any], use_error_term: bool = True) -> Iterator[Splice]:
    """Run ``model`` with ``saes`` spliced in at their hooks for the duration of the block.

    Any mix of SAEs (res, mlp, att, embedding) and transcoders; each at its own output hook. With
    ``use_error_term`` the model computes what the clean model computes, and the features and error
    are nodes of the autograd graph. On exit the original hook points come back.
    """
    saes = [saes] if not isinstance(saes, (list, tuple)) else list(saes)
    sites: list[SplicedSite] = []
    for sae in saes:
        hook_in = sae.cfg.metadata.hook_name
        hook_out = getattr(sae.cfg.metadata, "hook_name_out", None) or hook_in
        if not hook_in:
            raise ValueError(f"{type(sae).__name__} has no cfg.metadata.hook_name; set it first")
        if any(hook_out == s.hook_out for s in sites):
            raise ValueError(f"two SAEs write to {hook_out!r}; splice one SAE per output hook")
        for name in {hook_in, hook_out}:
            _check_hook(model, name, sae)
        sites.append(SplicedSite(sae, hook_in, hook_out, *site_of(hook_in)))
    points: dict[str, SAEHookPoint] = {}
    new: dict[str, HookPoint] = {}
    for s in sites:
        check_writable(model, s.hook_out)
        capture = None
        if s.hook_in != s.hook_out:
            new[s.hook_in] = capture = _CaptureHookPoint(keep_graph=is_bridge(model))
        new[s.hook_out] = points[s.hook_out] = SAEHookPoint(s.sae, use_error_term, capture)
    reshaping = [s.sae for s in sites if getattr(s.sae, "hook_z_reshaping_mode", False)]
    originals = replace_hook_points(model, new)
    try:
        # The splice flattens hook_z itself; SAELens's own reshaping would see 3-d inputs.
        for sae in reshaping:
            sae.turn_off_forward_pass_hook_z_reshaping()
        yield Splice(model, tuple(sites), points)
    finally:
        for sae in reshaping:
            sae.turn_on_forward_pass_hook_z_reshaping()
        restore_hook_points(model, originals)
