"""A JumpReLU training step that is dense only in the encoder forward.

After z = x W_enc + b_enc, every other product of the step needs only two kinds of (token, latent)
pairs: the active ones (z > theta), and those inside the threshold's rectangle band
|z - theta| < eps/2, where the straight-through estimators give the threshold a pseudo-gradient.

- decoder forward: y_hat = sum of the W_dec rows of active latents, weighted by f (a gather);
- gradient to the latents: D = R . W_dec[j] at those pairs only (R = dLoss/dy_hat);
- gradient to z: D at active pairs (JumpReLU passes H(z - theta)); the step passes nothing;
- threshold: -(theta/eps) K D from the JumpReLU and -(1/eps) K lambda/n from the L0 term;
- W_dec and W_enc: scatter-adds over active pairs, grouped by latent; the decoder's gradient is
  then projected onto each row's tangent space exactly as ``remove_parallel_grad`` does.

The pairs are found once in the forward pass from a superset test (z - theta > -eps) and the exact
tests (z > theta; the kernel on (z - theta)/eps) are applied to the candidates with the same
elementwise operations, in the same dtype, as the dense path, so band edges fall the same way.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, autograd

from gemma_scope_ext.saes.jumprelu import rectangle
from gemma_scope_ext.training.decoder_grad import project_rows

__all__ = [
    "SPARSE_TRAIN_DENSITY_CUTOFF",
    "SPARSE_TRAIN_MIN_WORK",
    "SparseStep",
    "candidate_density",
    "sparse_training_step",
    "use_sparse_training",
]

SPARSE_TRAIN_DENSITY_CUTOFF: dict[str, float] = {"cpu": 0.021, "cuda": 0.01}
"""Largest fraction of candidate (token, latent) pairs (z - theta > -eps) at which the sparse
step is used, per device type. CPU (measured, 2304 x 16384, batch 1024, 2 shared cores; see
benchmarks/RESULTS.md): the sparse step is 2.6-3.0x SAELens's at density 0.0054 (L0 ~63) and
1.5-2.1x faster than the dense step at 0.0205 (L0 ~280) in six runs; the cut-off sits just
above the densest point measured (the break-even lies beyond it). CUDA: not measured here (no
GPU was available); an estimate to be checked with
``python -m benchmarks.bench_sparse_train --device cuda``. Other devices use the dense step."""

SPARSE_TRAIN_MIN_WORK = 1 << 22
"""Below this many multiply-adds per token (d_in * d_sae + d_sae * d_out) the dense step is used."""

_CHUNK = 8192  # pairs per gather where the sampled product is not used (bf16): bounds temporaries


class SparseStep(NamedTuple):
    """What the sparse training step returns (the last three carry no gradient)."""

    mse_loss: Tensor
    """Mean over tokens of ||y - y_hat||^2 (scalar, differentiable)."""
    l0: Tensor
    """Mean number of active latents per token through the step estimator (scalar, differentiable)."""
    sae_out: Tensor
    """The reconstruction y_hat [n, d_out]."""
    feature_acts: Tensor
    """The latent activations f [n, d_sae], dense."""
    hidden_pre: Tensor
    """The pre-activations z [n, d_sae]."""
    density: float
    """Fraction of (token, latent) pairs kept as candidates (active, in the band, or near it)."""


def candidate_density(
    hidden_pre: Float[Tensor, "n d_sae"], threshold: Float[Tensor, " d_sae"], bandwidth: float
) -> float:
    """Fraction of pairs the sparse step would keep: z - theta > -eps (a superset of active and
    in-band pairs). Used by the dense path to decide whether the next step should be sparse."""
    with torch.no_grad():
        d = hidden_pre - threshold.to(hidden_pre.dtype)
        return torch.count_nonzero(d > -bandwidth).item() / max(d.numel(), 1)


def use_sparse_training(
    mode: str, density: float | None, d_in: int, d_sae: int, d_out: int, device: torch.device
) -> bool:
    """Whether the next step runs sparse: ``mode`` 'on'/'off' forces it; 'auto' uses the density
    measured at the previous step (None before the first) against the device's cut-off."""
    if mode != "auto":
        return mode == "on"
    cutoff = SPARSE_TRAIN_DENSITY_CUTOFF.get(device.type)
    if density is None or cutoff is None or d_sae * (d_in + d_out) < SPARSE_TRAIN_MIN_WORK:
        return False
    return density <= cutoff


def _bag_offsets(keys: Tensor, n_bags: int) -> Tensor:
    counts = torch.bincount(keys, minlength=n_bags)
    offsets = torch.zeros_like(counts)
    offsets[1:] = counts.cumsum(0)[:-1]
    return offsets


def _rows_sum(index: Tensor, keys: Tensor, weights: Tensor, table: Tensor, n: int) -> Tensor:
    """out[k] = sum over pairs p with keys[p] == k of weights[p] * table[index[p]]; keys sorted."""
    return F.embedding_bag(index, table, _bag_offsets(keys, n), mode="sum",
                           per_sample_weights=weights.to(table.dtype))  # fmt: skip


def _grouping_order(keys: Tensor, n_keys: int) -> Tensor:
    """The stable order that groups pairs by key (pairs keep their order within a key)."""
    # int32 keys: the same permutation, and on CPU 10-20x faster to sort than int64 (measured at
    # 65k-300k pairs: 0.5-8 ms against 9-26 ms alone, ~190 ms within a loaded training step)
    small = keys.to(torch.int32) if n_keys <= torch.iinfo(torch.int32).max else keys
    return torch.argsort(small, stable=True)


def _csr(keys: Tensor, index: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A CSR matrix with ``values`` at (keys[p], index[p]); ``keys`` sorted, ``index`` sorted
    within each key (the order ``nonzero`` gives)."""
    crow = torch.zeros(shape[0] + 1, dtype=torch.int64, device=keys.device)
    crow[1:] = torch.bincount(keys, minlength=shape[0]).cumsum(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
        return torch.sparse_csr_tensor(crow, index, values, size=shape, check_invariants=False)


def _encoder_grad(x: Tensor, tok: Tensor, lat: Tensor, g: Tensor, d_sae: int) -> Tensor:
    """x^T G with G [n, d_sae] holding g at the pairs (tok, lat) grouped by latent, as a contiguous
    [d_in, d_sae] tensor (the parameter's layout, which autograd accumulates without a copy).

    Gathered as [d_sae, d_in] rows and transposed once: on CPU this is about twice as fast as
    MKL's dense-times-CSR product that would write [d_in, d_sae] directly (measured, see
    benchmarks/RESULTS.md)."""
    return _rows_sum(tok, lat, g, x, d_sae).T.contiguous()


def _pair_dots(R: Tensor, W: Tensor, tok: Tensor, lat: Tensor) -> Tensor:
    """R[tok[p]] . W[lat[p]] for every pair p (pairs sorted by token, then latent)."""
    dtype = torch.promote_types(R.dtype, W.dtype)
    if dtype in (torch.float32, torch.float64):
        # A sampled dense-dense product (SDDMM) on the pairs' CSR pattern: about 20x faster on
        # CPU than gathering both rows of every pair, and no [pairs, d_out] temporaries.
        zeros = torch.zeros(tok.shape[0], dtype=dtype, device=R.device)
        pattern = _csr(tok, lat, zeros, (R.shape[0], W.shape[0]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
            return torch.sparse.sampled_addmm(pattern, R.to(dtype), W.to(dtype).T, beta=0.0).values()
    out = torch.empty(tok.shape[0], dtype=dtype, device=R.device)
    for s in range(0, tok.shape[0], _CHUNK):
        t, j = tok[s : s + _CHUNK], lat[s : s + _CHUNK]
        out[s : s + _CHUNK] = torch.linalg.vecdot(R.index_select(0, t), W.index_select(0, j))
    return out


class _SparseTrainStep(autograd.Function):
    @staticmethod
    def forward(x, W_enc, b_enc, threshold, W_dec, b_dec, target, bandwidth, project):  # noqa: ARG004
        z = x @ W_enc + b_enc  # as the dense path writes it, so z (and autocast) are the same
        theta = threshold.to(z.dtype)
        tok, lat = (z - theta > -bandwidth).nonzero(as_tuple=True)  # sorted by token
        zp = z[tok, lat]
        active = zp > theta[lat]
        tok_a, lat_a, f_a = tok[active], lat[active], zp[active]
        n = z.shape[0]
        sae_out = _rows_sum(lat_a, tok_a, f_a, W_dec, n) + b_dec
        diff = sae_out - target
        feature_acts = torch.zeros_like(z).index_put_((tok_a, lat_a), f_a)
        l0 = torch.tensor(tok_a.shape[0] / n, dtype=z.dtype, device=z.device)
        return diff.pow(2).sum(dim=-1).mean(), l0, sae_out, feature_acts, z, tok, lat, zp

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        x, W_enc, _, threshold, W_dec, _, target, bandwidth, project = inputs
        _, _, sae_out, feature_acts, z, tok, lat, zp = output
        ctx.mark_non_differentiable(sae_out, feature_acts, z, tok, lat, zp)
        ctx.save_for_backward(x, W_enc, threshold, W_dec, sae_out - target, tok, lat, zp)
        ctx.bandwidth, ctx.project, ctx.d_sae = bandwidth, project, z.shape[1]

    @staticmethod
    def backward(ctx: Any, g_mse: Tensor, g_l0: Tensor, *_: Any) -> tuple:  # type: ignore[override]
        x, W_enc, threshold, W_dec, diff, tok, lat, zp = ctx.saved_tensors
        eps, n, d_sae = ctx.bandwidth, x.shape[0], ctx.d_sae
        theta = threshold.to(zp.dtype)[lat]
        active = zp > theta
        kernel = rectangle((zp - theta) / eps)  # the dense path's test, elementwise alike
        keep = active | (kernel > 0)
        tok, lat, zp, theta = tok[keep], lat[keep], zp[keep], theta[keep]
        active, kernel = active[keep], kernel[keep]

        R = diff * (2.0 * g_mse / n)  # dLoss/dy_hat
        D_exact = _pair_dots(R, W_dec, tok, lat)  # R[t] . W_dec[j] at the kept pairs
        D = D_exact.to(zp.dtype)  # dLoss/df
        grad_theta_p = -(theta / eps) * kernel * D - (g_l0 / (n * eps)) * kernel
        grad_threshold = torch.zeros(d_sae, dtype=zp.dtype, device=zp.device)
        grad_threshold = grad_threshold.index_add_(0, lat, grad_theta_p).to(threshold.dtype)

        tok_a, lat_a, g_a, f_a = tok[active], lat[active], D[active], zp[active]
        grad_b_enc = torch.zeros(d_sae, dtype=zp.dtype, device=zp.device).index_add_(0, lat_a, g_a)
        order = _grouping_order(lat_a, d_sae)
        by_tok, by_lat = tok_a[order], lat_a[order]
        grad_W_enc = _encoder_grad(x, by_tok, by_lat, g_a[order], d_sae)
        grad_W_dec = _rows_sum(by_tok, by_lat, f_a[order], R, d_sae)
        if ctx.project:
            # g_j . w_j = sum over j's active pairs of f (R[t] . w_j): the pair dots already
            # computed, so the projection is one in-place pass (rows without pairs stay zero)
            dot = torch.zeros(d_sae, dtype=D_exact.dtype, device=D_exact.device)
            dot.index_add_(0, lat_a, f_a.to(D_exact.dtype) * D_exact[active])
            grad_W_dec = project_rows(grad_W_dec, W_dec, dot)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = _rows_sum(lat_a, tok_a, g_a, W_enc.T.contiguous(), n).to(x.dtype)
        grad_target = -R if ctx.needs_input_grad[6] else None
        return (grad_x, grad_W_enc.to(W_enc.dtype), grad_b_enc, grad_threshold,
                grad_W_dec.to(W_dec.dtype), R.sum(0), grad_target, None, None)  # fmt: skip


def sparse_training_step(
    x: Float[Tensor, "n d_in"],
    W_enc: Float[Tensor, "d_in d_sae"],
    b_enc: Float[Tensor, " d_sae"],
    threshold: Float[Tensor, " d_sae"],
    W_dec: Float[Tensor, "d_sae d_out"],
    b_dec: Float[Tensor, " d_out"],
    target: Float[Tensor, "n d_out"],
    bandwidth: float,
    project_decoder_grad: bool,
) -> SparseStep:
    """The JumpReLU step's MSE and L0 with gradients to every argument, touching only the active
    and in-band (token, latent) pairs after the dense encoder forward. The threshold's gradient
    is the dense path's rectangle-kernel estimate; with ``project_decoder_grad`` W_dec's gradient
    loses its component along each row, as ``remove_parallel_grad`` gives it."""
    if x.dim() != 2 or target.dim() != 2 or x.shape[0] != target.shape[0]:
        raise ValueError(
            f"the sparse step takes [n, d_in] inputs and [n, d_out] targets with the same n, got "
            f"{tuple(x.shape)} and {tuple(target.shape)}"
        )
    mse, l0, sae_out, feature_acts, z, tok, _, _ = _SparseTrainStep.apply(
        x, W_enc, b_enc, threshold, W_dec, b_dec, target, float(bandwidth), project_decoder_grad
    )
    return SparseStep(mse, l0, sae_out, feature_acts, z, tok.shape[0] / max(z.numel(), 1))
