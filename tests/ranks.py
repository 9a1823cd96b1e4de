"""Helpers of the tests that run several gloo ranks on one machine."""

from __future__ import annotations

import socket
from collections.abc import Callable

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port free on localhost now, for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(worker: Callable[..., None], args: tuple, nprocs: int = 2) -> None:
    """Run ``worker(rank, *args)`` in ``nprocs`` processes and wait for them.

    Forked (fast) on a machine without a GPU; spawned on one with a GPU, where a forked child can use neither
    CUDA nor autograd (any earlier backward pass in this process, even on the CPU, started autograd's device
    threads, and the child refuses to run backward after such a fork)."""
    method = "spawn" if torch.cuda.is_available() else "fork"
    mp.start_processes(worker, args=args, nprocs=nprocs, start_method=method)
