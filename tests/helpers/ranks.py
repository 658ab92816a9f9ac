"""Launching a small torch.distributed job on the CPU, as torchrun does: one process per rank."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]


class RankResult(NamedTuple):
    """One rank's exit status and output."""

    returncode: int
    stdout: str
    stderr: str


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], n_ranks: int, timeout: float = 300) -> list[RankResult]:
    """Run ``python argv...`` as ranks 0..n-1 of one gloo job (torchrun's environment variables);
    a job still running after ``timeout`` seconds is killed and reported as hung."""
    port = free_port()
    procs = []
    for rank in range(n_ranks):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(n_ranks),
               "LOCAL_WORLD_SIZE": str(n_ranks), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append(RankResult(p.returncode, out, err))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise AssertionError(f"the {n_ranks}-rank job hung for {timeout} s") from None
    return results
