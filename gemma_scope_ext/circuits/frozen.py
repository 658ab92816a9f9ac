"""The prompt's frozen replacement model: one forward pass, then batched vector-Jacobian products.

As circuit-tracer does for Gemma 2 transcoders, every attention pattern and RMSNorm scale is
detached at its value on the prompt, and each spliced site's output is replaced by a leaf tensor
holding its clean value (``decode(f) + error``, split into nodes afterwards; a skip transcoder's
``x W_skip^T`` is not a node but stays a live linear path from its input); so is every MLP output
that no SAE replaces, and the token embedding. The MLPs' own inputs are detached: each MLP output is
a leaf, so nothing flows through them. Between the leaves and what is read (SAE inputs, the
unembedding input) the model is then linear: the residual stream, attention's value path through the
frozen pattern, and the normalisations with frozen scales. The forward values are the clean model's
exactly.

The forward runs once, at batch size 1. Each batch of rows is one ``torch.autograd.grad`` call with
``is_grads_batched=True``, which vmaps the backward over the rows: no batched forward, no [batch, head,
pos, pos] attention tensors, and the graph is kept for the next batch. Each ``hook_z`` carries its
value unchanged but takes its gradient from ``_attend`` (the frozen pattern applied as a 2-D matrix
from the right), because TransformerLens's ``pattern @ v`` would copy the pattern once per row in a
vmapped backward; the forward checks that the two agree.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from gemma_scope_ext.circuits.nodes import SOURCE_ONLY_SITES, SiteInfo, stream_rank
from gemma_scope_ext.circuits.splice import site_of, skip_term
from gemma_scope_ext.models.backend import check_writable, distinct_hooks, hooks_by_name

__all__ = ["FrozenRun", "SiteRun", "check_affine", "decoder_rows", "encoder_rows",
           "frozen_forward", "pre_activations", "pull_back"]

_SAME_HOOK = re.compile(
    r"hook_embed|blocks\.\d+\.(hook_resid_pre|hook_resid_mid|hook_resid_post|attn\.hook_z|"
    r"hook_attn_out|hook_mlp_out)")
_TRANSCODER_IN = re.compile(r"blocks\.(\d+)\.(ln2\.hook_normalized|hook_resid_mid|mlp\.hook_in)")


def _mlp_inputs(model: Any) -> set[str]:
    """Where each MLP's input is detached: ``mlp.hook_in`` (after the RMSNorm gain) where the model
    has it, else ``ln2.hook_normalized``; transcoders reading either stay live up to there."""
    return {f"blocks.{i}.mlp.hook_in" if f"blocks.{i}.mlp.hook_in" in model.hook_dict
            else f"blocks.{i}.ln2.hook_normalized" for i in range(model.cfg.n_layers)}
_ATTN = re.compile(r"blocks\.(\d+)\.attn\.hook_(v|pattern|z)")


def _attend(v: Tensor, pattern: Tensor) -> Tensor:
    """z = pattern @ v per head, written so that its batched backward never copies the pattern.

    v [1, key, kv_heads, d_head], pattern [1, heads, query, key] -> z [1, query, heads, d_head].
    The pattern multiplies from the right as a 2-D matrix: vmap then folds the rows' batch into
    one matrix product instead of expanding a [rows, heads, query, key] copy of the pattern.
    """
    v = v.repeat_interleave(pattern.shape[1] // v.shape[2], dim=2)  # grouped-query heads
    vt = v[0].permute(1, 2, 0)  # [heads, d_head, key]
    heads = [vh @ ph.T for vh, ph in zip(vt.unbind(0), pattern[0].unbind(0), strict=True)]
    return torch.stack(heads, 0).permute(2, 0, 1)[None]


class SiteRun(NamedTuple):
    """One SAE in the frozen forward."""

    info: SiteInfo
    """Its site, layer, hooks and width."""
    sae: Any
    """The SAE or transcoder."""
    sae_in: Tensor
    """[1, pos, d_in] input, in the autograd graph unless the site is source-only."""
    leaf: Tensor
    """[1, pos, d_out] leaf holding the site's output (``hook_z`` flattened head-major)."""
    features: Tensor
    """[pos, d_sae] activations (detached, in the SAE's dtype)."""
    error: Tensor
    """[pos, d_out] output minus reconstruction (detached)."""

    @property
    def has_inputs(self) -> bool:
        """Whether upstream nodes reach this site's input (its features then get edges)."""
        return self.info.site not in SOURCE_ONLY_SITES


class FrozenRun(NamedTuple):
    """What the frozen forward produced."""

    sites: list[SiteRun]
    """The SAEs, in residual-stream order."""
    embed: Tensor | None
    """[1, pos, d_model] leaf of the token embedding (None when an SAE replaces it)."""
    mlp: dict[int, Tensor]
    """Layer -> [1, pos, d_model] leaf of the MLP outputs that no SAE replaces."""
    unembed_in: Tensor
    """[1, pos, d_model] input of the unembedding, in the autograd graph."""
    pre_logits: Tensor
    """[1, pos, d_vocab] logits before the final soft-cap (detached)."""
    logits: Tensor
    """[1, pos, d_vocab] the model's logits (detached)."""


def pre_activations(sae: Any, x: Tensor) -> Tensor:
    """The SAE's pre-activations (what its ``hook_sae_acts_pre`` sees) for input ``x``."""
    seen: dict[str, Tensor] = {}
    with sae.hooks(fwd_hooks=[("hook_sae_acts_pre", lambda t, hook: seen.setdefault("pre", t))]):
        sae.encode(x)
    return seen["pre"]


def _check_sae(model: Any, sae: Any) -> SiteInfo:
    name = type(sae).__name__
    skip = [n for n, _ in sae.named_parameters() if "skip" in n.lower() and n != "W_skip"]
    if skip:
        raise ValueError(
            f"{name} has a skip connection ({', '.join(skip)}) that is not SAELens's W_skip "
            "[d_out, d_in]; feature_graph reads x W_skip^T only. Rename it W_skip or build the "
            "graph without it")
    hook_in = sae.cfg.metadata.hook_name
    hook_out = getattr(sae.cfg.metadata, "hook_name_out", None) or hook_in
    for hook in {hook_in, hook_out}:
        if hook not in model.hook_dict:
            raise ValueError(f"{name} uses hook {hook!r}, which the model does not have")
    ok = bool(_SAME_HOOK.fullmatch(hook_in)) if hook_in == hook_out else bool(
        (m := _TRANSCODER_IN.fullmatch(hook_in)) and hook_out == f"blocks.{m.group(1)}.hook_mlp_out")
    if not ok:
        raise ValueError(
            f"feature_graph supports SAEs at hook_embed and blocks.L.hook_resid_pre/mid/post, "
            f"attn.hook_z, hook_attn_out, hook_mlp_out, and transcoders from blocks.L.ln2."
            f"hook_normalized (or hook_resid_mid, mlp.hook_in) to blocks.L.hook_mlp_out; got {name} reading "
            f"{hook_in!r} and writing {hook_out!r}")
    check_writable(model, hook_out)
    site, layer = site_of(hook_in)
    return SiteInfo(site, layer, hook_in, hook_out, int(sae.cfg.d_sae))


@contextmanager
def _flat_inputs(saes: Sequence[Any]) -> Iterator[None]:
    """SAELens attention SAEs reshape hook_z themselves; here they get it flattened already."""
    reshaping = [s for s in saes if getattr(s, "hook_z_reshaping_mode", False)]
    for sae in reshaping:
        sae.turn_off_forward_pass_hook_z_reshaping()
    try:
        yield
    finally:
        for sae in reshaping:
            sae.turn_on_forward_pass_hook_z_reshaping()


@contextmanager
def _frozen_parameters(model: Any) -> Iterator[None]:
    """No parameter needs a gradient; without this autograd would keep inputs for weight grads."""
    before = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in before:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in before:
            p.requires_grad_(flag)


def _flat(x: Tensor) -> Tensor:
    return x.flatten(-2) if x.ndim == 4 else x


@contextmanager
def frozen_forward(model: Any, saes: Sequence[Any], tokens: Int[Tensor, "1 pos"]
                   ) -> Iterator[FrozenRun]:
    """Run the frozen model once on ``tokens``; the run's tensors stay differentiable inside."""
    infos = [_check_sae(model, s) for s in saes]
    seen: dict[str, int] = {}
    for info in infos:
        if info.hook_out in seen:
            raise ValueError(f"two SAEs write to {info.hook_out!r}; give one SAE per output hook")
        seen[info.hook_out] = 1
    for name in ("unembed.hook_in", "unembed.hook_out"):
        if name not in model.hook_dict:
            raise ValueError(f"the model has no {name!r} hook (TransformerLens >= 3.9 has it)")
    order = sorted(range(len(saes)), key=lambda i: stream_rank(infos[i].hook_out))
    saes, infos = [saes[i] for i in order], [infos[i] for i in order]
    readers: dict[str, list[int]] = {}
    for i, info in enumerate(infos):
        readers.setdefault(info.hook_in, []).append(i)
    writers = {info.hook_out: i for i, info in enumerate(infos)}
    frozen = ["hook_embed"] + [f"blocks.{i}.hook_mlp_out" for i in range(model.cfg.n_layers)]
    inputs: dict[int, Tensor] = {}
    leaves: dict[str, Tensor] = {}
    captured: dict[str, Tensor] = {}
    attention: dict[tuple[str, str], Tensor] = {}
    mlp_inputs = _mlp_inputs(model)

    def hook(x: Tensor, hook: Any, name: str) -> Tensor:
        if m := _ATTN.fullmatch(name):
            layer, part = m.groups()
            if part == "v":
                attention[(layer, "v")] = x
                return x
            if part == "pattern":
                attention[(layer, "pattern")] = x.detach()
                return x.detach()
            z = _attend(attention.pop((layer, "v")), attention.pop((layer, "pattern")))
            if not torch.allclose(z, x, rtol=1e-4, atol=1e-5 * float(x.detach().abs().max())):
                raise RuntimeError(f"{name} is not pattern @ v in this model; feature_graph "
                                   "cannot freeze its attention")
            x = x.detach() + (z - z.detach())  # the clean value exactly, with z's gradient
        for i in readers.get(name, ()):
            keep_graph = infos[i].site not in SOURCE_ONLY_SITES
            inputs[i] = _flat(x) if keep_graph else _flat(x).detach()
        if name in writers or name in frozen:
            leaves[name] = out = _flat(x).detach().requires_grad_(True)
            if name in writers and (i := writers[name]) in inputs:
                # A skip transcoder's x W_skip^T stays a live linear path from its input: the
                # value is still the clean one, and the gradient flows through W_skip.
                skip = skip_term(saes[i], inputs[i])
                out = out + (skip - skip.detach()) if isinstance(skip, Tensor) else out
            return out.view(x.shape)
        if name.endswith("hook_pattern") or name.endswith("hook_scale") or name in mlp_inputs:
            return x.detach()
        captured[name] = x
        return x

    names = set(readers) | set(writers) | set(frozen) | {"unembed.hook_in", "unembed.hook_out"}
    names |= {n for n in model.hook_dict if n.endswith("hook_pattern") or n.endswith("hook_scale")
              or n in mlp_inputs or _ATTN.fullmatch(n)}
    # The names the SAEs use first: where two names reach one point (a bridge), theirs is kept.
    ordered = sorted(names, key=lambda n: (n not in readers and n not in writers, n))
    with _flat_inputs(saes):
        with _frozen_parameters(model), torch.enable_grad(), warnings.catch_warnings(), \
                model.hooks(fwd_hooks=hooks_by_name(distinct_hooks(model, ordered), hook)):
            # A bridge warns that edited norm scales replace its native norm: freezing them is
            # the point here.
            warnings.filterwarnings("ignore", message=".*edited hook_scale/hook_normalized")
            logits = model(tokens)
        sites = []
        with torch.no_grad():
            for i, (sae, info) in enumerate(zip(saes, infos, strict=True)):
                leaf = leaves[info.hook_out]
                x_in = inputs[i].detach()
                f = sae.encode(x_in)[0]  # in the SAE's dtype, which may not be ours
                skip = skip_term(sae, x_in)
                recon = sae.decode(f[None])[0] + (skip[0] if isinstance(skip, Tensor) else 0.0)
                error = leaf.detach()[0] - recon.to(leaf.dtype)
                sites.append(SiteRun(info, sae, inputs[i], leaf, f, error))
        mlp = {i: leaves[n] for i in range(model.cfg.n_layers)
               if (n := f"blocks.{i}.hook_mlp_out") not in writers}
        yield FrozenRun(sites, None if "hook_embed" in writers else leaves["hook_embed"], mlp,
                        captured["unembed.hook_in"], captured["unembed.hook_out"].detach(),
                        logits.detach())


def pull_back(outputs: list[Tensor], grad_outputs: list[Tensor], sources: list[Tensor]
              ) -> list[Tensor | None]:
    """Rows of ``d(sum_o grad_outputs[o][r] . outputs[o]) / d source``, one per leading index r."""
    return list(torch.autograd.grad(outputs, sources, grad_outputs, retain_graph=True,
                                    allow_unused=True, is_grads_batched=True))


def encoder_rows(sae: Any, x: Float[Tensor, "b d_in"], features: Int[Tensor, " b"]
                 ) -> Float[Tensor, "b d_in"]:
    """d pre_activation[features[r]] / d x at each row's input x[r] (the encoder direction)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        pre = pre_activations(sae, x)
        (grad,) = torch.autograd.grad(pre.gather(1, features[:, None]).sum(), x)
    return grad


def decoder_rows(sae: Any, features: Int[Tensor, " k"]) -> Float[Tensor, "k d_out"]:
    """decode(e_k) - decode(0): each feature's output direction (decode is affine in f)."""
    with torch.no_grad():
        basis = torch.zeros(len(features) + 1, sae.cfg.d_sae, dtype=sae.W_dec.dtype,
                            device=sae.W_dec.device)
        basis[torch.arange(len(features)), features] = 1.0
        out = sae.decode(basis)
    return out[:-1] - out[-1:]


def check_affine(site: SiteRun, features: Tensor, directions: Tensor,
                 active: tuple[Tensor, Tensor]) -> None:
    """Edges are exact only when encoding (before the activation) and decoding are affine:
    ``features`` [pos, d_sae] must decode to the sum of their ``directions`` (one per active)."""
    sae, x = site.sae, site.sae_in.detach()[0]
    with torch.no_grad():
        pre = [pre_activations(sae, a * x) for a in (0.0, 1.0, 2.0)]
        curve = (pre[2] - 2 * pre[1] + pre[0]).abs().max()
        pos, feat = active
        x_hat = sae.decode(features[None])[0] - sae.decode(torch.zeros_like(features[:1]))
        linear = torch.zeros_like(x_hat).index_add_(0, pos, features[pos, feat, None] * directions)
        gap = (x_hat - linear).abs().max()
    scale_in, scale_out = pre[1].abs().max().clamp_min(1.0), x_hat.abs().max().clamp_min(1.0)
    if curve > 1e-3 * scale_in or gap > 1e-3 * scale_out:
        raise ValueError(
            f"{type(sae).__name__} at {site.info.hook_out!r} is not affine in its input and "
            f"features (curvature {float(curve):.2g}, decoder gap {float(gap):.2g}); feature_graph "
            "needs an affine encoder and decoder (no input-dependent normalisation)")
