"""Throughput of the Gemma Scope SAE against SAELens's ``jumprelu`` in the same process.

    python -m benchmarks.bench_sae [--device cuda] [--batch 1024] [--repeats 7]

Prints a markdown table: training steps (forward, backward, clipping, Adam, with the recipe's
gradient projection and renormalisation) and inference forward passes at Gemma Scope's sparsity
(L0 ~ 70 of 16k), as tokens per second and as the ratio ours / SAELens's.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from sae_lens.saes.jumprelu_sae import (
    JumpReLUSAE,
    JumpReLUSAEConfig,
    JumpReLUTrainingSAE,
    JumpReLUTrainingSAEConfig,
)
from sae_lens.saes.sae import TrainStepInput
from tqdm.auto import tqdm

from gemma_scope_ext.saes.sae import GemmaScopeSAE, GemmaScopeSAEConfig
from gemma_scope_ext.training.sae import GemmaScopeTrainingSAE, GemmaScopeTrainingSAEConfig

SIZES = [(256, 2048), (2304, 16384)]
TARGET_L0 = 70


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(
    ours: Callable[[], object], theirs: Callable[[], object], repeats: int, device: str
) -> tuple[float, float]:
    """Median seconds per call of each, after a warm-up call, timed alternately (ABAB...) so that
    drift in the machine's speed (other processes, clocks) falls on both sides alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for fn in (ours, theirs):
        fn()
    for _ in range(repeats):
        for fn, out in zip((ours, theirs), times, strict=True):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - start)
    return tuple(sorted(t)[len(t) // 2] for t in times)  # type: ignore[return-value]


def _train_step_fn(sae, x: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.Adam(sae.parameters(), lr=7e-5, betas=(0.0, 0.999))

    def run() -> None:
        out = sae.training_forward_pass(TrainStepInput(x, {"l0": 1e-3}, None, 0, False))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)  # as SAELens's trainer does
        opt.step()
        opt.zero_grad()

    return run


def _inference_pair(d_in: int, d_sae: int, x: torch.Tensor, device: str):
    """Our SAE and SAELens's on identical random weights, thresholds set for L0 ~ TARGET_L0."""
    gen = torch.Generator().manual_seed(0)
    W_dec = torch.randn(d_sae, d_in, generator=gen)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    params = {"W_enc": W_dec.T.contiguous(), "W_dec": W_dec, "b_enc": torch.zeros(d_sae),
              "b_dec": torch.zeros(d_in), "threshold": torch.zeros(d_sae)}  # fmt: skip
    pre = x.cpu() @ params["W_enc"]
    params["threshold"] = pre.quantile(1 - TARGET_L0 / d_sae, dim=0)
    ours = GemmaScopeSAE(GemmaScopeSAEConfig(d_in=d_in, d_sae=d_sae))
    theirs = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=False))
    for sae in (ours, theirs):
        sae.load_state_dict(params)
        sae.to(device)
    return ours, theirs


def bench(device: str, batch: int, repeats: int) -> list[tuple[str, str, float, float]]:
    rows = []
    for d_in, d_sae in tqdm(SIZES, desc="sizes"):
        size = f"{d_in} x {d_sae}"
        x = torch.randn(batch, d_in, generator=torch.Generator().manual_seed(1)).to(device)
        torch.manual_seed(0)
        ours_t = GemmaScopeTrainingSAE(
            GemmaScopeTrainingSAEConfig(d_in=d_in, d_sae=d_sae, device=device)
        ).to(device)
        theirs_t = JumpReLUTrainingSAE(
            JumpReLUTrainingSAEConfig(d_in=d_in, d_sae=d_sae, device=device)
        ).to(device)
        t_ours, t_theirs = _time(
            _train_step_fn(ours_t, x), _train_step_fn(theirs_t, x), repeats, device
        )
        rows.append(("training step", size, batch / t_ours, batch / t_theirs))
        del ours_t, theirs_t

        ours, theirs = _inference_pair(d_in, d_sae, x, device)
        with torch.no_grad():
            l0 = (ours.encode(x) > 0).float().sum(-1).mean().item()
            torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)
            t_ours, t_theirs = _time(lambda: ours(x), lambda: theirs(x), repeats, device)  # noqa: B023
        rows.append((f"inference (L0 {l0:.0f})", size, batch / t_ours, batch / t_theirs))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1024, help="tokens per step")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    rows = bench(args.device, args.batch, args.repeats)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"\n{name}, {torch.get_num_threads()} threads, batch {args.batch} tokens, "
          f"median of {args.repeats}\n")  # fmt: skip
    print("| what | d_in x d_sae | ours (tokens/s) | SAELens jumprelu (tokens/s) | ours / SAELens |")
    print("|---|---|---|---|---|")
    for what, size, ours, theirs in rows:
        print(f"| {what} | {size} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f} |")


if __name__ == "__main__":
    main()
