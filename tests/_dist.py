"""Helpers shared by the tests that spawn ``torch.distributed`` process groups."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, for a ``tcp://`` rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn_ranks(
    worker: Callable[..., None], out_dir: Path, *args: Any, world_size: int = 2
) -> list[Any]:
    """Run ``worker(rank, port, str(out_dir), *args)`` on ``world_size`` processes.

    Each rank saves its results to ``out_dir / f"rank{rank}.pt"``; they are returned in
    rank order.
    """
    mp.spawn(worker, args=(free_port(), str(out_dir), *args), nprocs=world_size, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(world_size)]
