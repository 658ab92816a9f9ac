"""Choosing a torch device: a default that fits the machine, and a clear error for one it lacks."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None, default_cpu: bool = False) -> str:
    """``device`` checked against this machine; None means CUDA when present (CPU if ``default_cpu``).

    ``torch.device("cuda")`` on a machine without CUDA fails much later with an assertion deep in
    torch; asking first gives an error that says what is available.
    """
    if device is None:
        return "cpu" if default_cpu or not torch.cuda.is_available() else "cuda"
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: {err}; expected e.g. cpu, cuda, cuda:1") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} asked for, but CUDA is not available here (torch "
                f"{torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); use cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but this machine has "
                             f"{torch.cuda.device_count()} CUDA devices")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for, but MPS is not available here; use cpu")
    return str(dev)
