"""Training step at Gemma Scope scale: our sparse step vs our dense step vs SAELens's ``jumprelu``.

    python -m benchmarks.bench_sparse_train [--device cuda] [--batch 1024] [--repeats 3]

Thresholds are set per latent from the batch's pre-activations so that the mean L0 is about 70 and
about 300 of 16k. The three steps (forward, backward, clipping at 1.0, Adam) are timed alternately
in one process, median of ``--repeats``. Prints one table of step times and ratios, then the step's
split: encoder forward (the one dense product), the rest of forward and backward, clipping, Adam;
and the limit (encoder forward + clipping + Adam + the elementwise passes over every latent).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput

from gemma_scope_ext.training.sae import GemmaScopeTrainingSAE, GemmaScopeTrainingSAEConfig

D_IN, D_SAE = 2304, 16384
L0S = (70, 300)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object], device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _set_l0(sae, x: torch.Tensor, l0: int) -> None:
    with torch.no_grad():
        sae_in = sae.process_sae_in(x) if isinstance(sae, GemmaScopeTrainingSAE) else x
        z = sae_in @ sae.W_enc + sae.b_enc
        theta = torch.quantile(z.float().cpu(), 1 - l0 / D_SAE, dim=0).clamp(min=1e-3)
        sae.threshold.copy_(theta.to(sae.threshold.device))


class Parts:
    """One SAE's training step, split into timed parts."""

    def __init__(self, sae, x: torch.Tensor, device: str):
        self.sae, self.x, self.device = sae, x, device
        self.opt = torch.optim.Adam(sae.parameters(), lr=7e-5, betas=(0.0, 0.999))
        self.times: dict[str, list[float]] = {"step": [], "fwd+bwd": [], "clip": [], "adam": []}

    def step(self) -> None:
        def fwd_bwd() -> None:
            out = self.sae.training_forward_pass(TrainStepInput(self.x, {"l0": 1e-3}, None, 0, False))
            out.loss.backward()

        parts = {
            "fwd+bwd": fwd_bwd,
            "clip": lambda: torch.nn.utils.clip_grad_norm_(self.sae.parameters(), 1.0),
            "adam": self.opt.step,
        }
        total = 0.0
        for name, fn in parts.items():
            t = _timed(fn, self.device)
            self.times[name].append(t)
            total += t
        self.opt.zero_grad()
        self.times["step"].append(total)

    def median(self, name: str) -> float:
        t = sorted(self.times[name])
        return t[len(t) // 2]


def _elementwise(sae: GemmaScopeTrainingSAE, z: torch.Tensor) -> Callable[[], object]:
    """The passes over every latent that any exact step must make after the encoder."""
    theta = sae.get_threshold().detach()

    def run() -> object:
        tok, lat = (z - theta > -sae.bandwidth).nonzero(as_tuple=True)
        return torch.zeros_like(z).index_put_((tok, lat), z[tok, lat])

    return run


def bench(device: str, batch: int, repeats: int) -> list[str]:
    lines = []
    x = torch.randn(batch, D_IN, generator=torch.Generator().manual_seed(1)).to(device)
    for l0 in L0S:
        torch.manual_seed(0)
        saes = {}
        for mode in ("on", "off"):
            cfg = GemmaScopeTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, device=device,
                                              sparse_training=mode)  # fmt: skip
            saes[f"ours {'sparse' if mode == 'on' else 'dense'}"] = GemmaScopeTrainingSAE(cfg)
        theirs = JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, device=device))
        saes["SAELens jumprelu"] = theirs
        ours = saes["ours sparse"]
        ours.estimate_scales(x, x)
        saes["ours dense"].load_state_dict(ours.state_dict())
        for sae in saes.values():
            _set_l0(sae, x, l0)
        parts = {name: Parts(sae, x, device) for name, sae in saes.items()}
        for p in parts.values():
            p.step()  # warm-up
            p.times = {k: [] for k in p.times}
        enc_t, elem_t = [], []
        with torch.no_grad():
            sae_in = ours.process_sae_in(x)
            z = sae_in @ ours.W_enc + ours.b_enc
            measured_l0 = (z > ours.get_threshold()).float().sum(-1).mean().item()
        for _ in range(repeats):
            for p in parts.values():
                p.step()
            with torch.no_grad():
                enc_t.append(_timed(lambda: sae_in @ ours.W_enc + ours.b_enc, device))  # noqa: B023
                elem_t.append(_timed(_elementwise(ours, z), device))
        enc, elem = sorted(enc_t)[repeats // 2], sorted(elem_t)[repeats // 2]
        ref = parts["SAELens jumprelu"].median("step")
        lines += [f"\n### L0 {measured_l0:.0f} (candidate-pair density {ours.pair_density:.4f})\n",
                  "| step | s/step | tokens/s | x SAELens | fwd+bwd s | clip s | Adam s |",
                  "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for name, p in parts.items():
            s = p.median("step")
            lines.append(f"| {name} | {s:.3f} | {batch / s:,.0f} | {ref / s:.2f} | "
                         f"{p.median('fwd+bwd'):.3f} | {p.median('clip'):.3f} | "
                         f"{p.median('adam'):.3f} |")  # fmt: skip
        sp = parts["ours sparse"]
        limit = enc + elem + sp.median("clip") + sp.median("adam")
        lines += [
            f"\nours sparse: encoder forward {enc:.3f} s, rest of forward+backward (sparse parts "
            f"and the passes over every latent) {sp.median('fwd+bwd') - enc:.3f} s, of which the "
            f"elementwise passes {elem:.3f} s; clip {sp.median('clip'):.3f} s, Adam "
            f"{sp.median('adam'):.3f} s.",
            f"limit (encoder + elementwise + clip + Adam) {limit:.3f} s = {ref / limit:.2f}x "
            f"SAELens; the sparse step is at {limit / sp.median('step'):.0%} of it.",
        ]
        del saes, parts
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1024, help="tokens per step")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    lines = bench(args.device, args.batch, args.repeats)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"\n{name}, {torch.get_num_threads()} threads, {D_IN} x {D_SAE}, batch {args.batch} "
          f"tokens, median of {args.repeats}, timed alternately")  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
