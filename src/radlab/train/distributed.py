"""PyTorch's own distributed stack: process-group set-up from ``torchrun``'s environment, rank helpers, and
the cross-rank gathers that let contrastive losses see the global batch.

``torchrun --nproc-per-node N -m radlab.cli pretrain ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; without
them the run is a single process and every helper here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the process group torchrun describes (nccl on GPU, gloo on CPU) and pick this rank's device.

    ``device`` is "auto" (CUDA when available), "cpu" or "cuda"."""
    use_cuda = _resolve(device) == "cuda"
    world = dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
    rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        _check_gpu(local_rank, "runtime.device is 'cuda'", "runtime.device=auto or cpu",
                   lambda count: f"LOCAL_RANK {local_rank} has no GPU: this node shows {count} CUDA device(s); "
                   f"start at most {count} process(es) per node (torchrun --nproc_per_node={count}), or run "
                   "the ranks on the CPU with runtime.device=cpu")
        torch.cuda.set_device(local_rank)
    target = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistEnv(rank, world, local_rank, target)


def _resolve(name: str) -> str:
    """"auto" becomes "cuda" when PyTorch sees a GPU, else "cpu"; other names pass through."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _check_gpu(index: int, asked: str, instead: str, too_few: Callable[[int], str]) -> None:
    """Clear errors instead of CUDA's own: no CUDA at all (use ``instead``), or no GPU number ``index``
    (``too_few`` words it from the GPU count)."""
    if not torch.cuda.is_available():
        raise RuntimeError(f"{asked} but PyTorch sees no CUDA device (a CPU build of torch, no driver, or "
                           f"CUDA_VISIBLE_DEVICES empty); use {instead}")
    count = torch.cuda.device_count()
    if index >= count:
        raise RuntimeError(too_few(count))


def process_device(name: str) -> torch.device:
    """The device of a single-process job (evaluation): "cpu", "cuda", "cuda:N", or "auto" (CUDA when
    available); a clear error when the GPU asked for is not there."""
    try:
        device = torch.device(_resolve(name))
    except RuntimeError as err:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from err
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda":
        _check_gpu(device.index or 0, f"device {name!r} asked for", "--device cpu",
                   lambda count: f"device {name!r} asked for, but this machine shows {count} CUDA device(s) "
                   f"(cuda:0 to cuda:{count - 1})")
    return device


def sync_batch_norm(module: torch.nn.Module, env: DistEnv) -> torch.nn.Module:
    """Batch norm over the global batch on several GPUs (SimCLR's global BN; a 2-GPU run then normalises as
    one process does). PyTorch's SyncBatchNorm runs on GPUs only, so CPU (gloo) runs keep per-rank BN."""
    if env.world_size > 1 and env.device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


SETUP_TIMEOUT = timedelta(hours=24)


def wait_for_main() -> None:
    """A barrier behind work rank 0 does alone before training (the image cache, the tokenizer): on a gloo group
    with a 24-hour timeout, so the other ranks wait out a long first cache build instead of timing out at the
    process group's default (10 minutes on NCCL)."""
    if dist.is_initialized():
        group = dist.new_group(backend="gloo", timeout=SETUP_TIMEOUT)
        dist.barrier(group=group)
        dist.destroy_process_group(group)


def from_main(value: T) -> T:
    """Rank 0's ``value`` on every rank (a picklable object), so that the ranks act on one decision."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a tensor (a copy; the input is left alone)."""
    out = values.detach().clone()
    if world_size() > 1:
        dist.all_reduce(out)
        out /= world_size()
    return out


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (stop decisions must agree)."""
    value = torch.tensor([float(flag)], device=device)
    if world_size() > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class _GatherRows(torch.autograd.Function):
    """All-gather of [n_r, ...] blocks of possibly different sizes, concatenated in rank order.

    Backward sums the gradient every rank computed for the gathered tensor and returns this rank's rows, so
    each rank's features receive the gradients of all ranks' losses (open_clip's ``gather_with_grad``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        ctx.sizes = sizes
        ctx.rank = dist.get_rank()
        padded = x.new_zeros((max(sizes), *x.shape[1:]))
        padded[: len(x)] = x
        blocks = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(blocks, padded.contiguous())
        return torch.cat([b[:n] for b, n in zip(blocks, sizes, strict=True)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.clone(memory_format=torch.contiguous_format)  # autograd may hand this tensor to others too
        dist.all_reduce(grad)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start: start + ctx.sizes[ctx.rank]], None


def gather_sizes(n: int, device: torch.device) -> list[int]:
    """The local row count of every rank."""
    if world_size() == 1:
        return [n]
    counts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size())]
    dist.all_gather(counts, torch.tensor([n], device=device))
    return [int(c.item()) for c in counts]


def global_count(n: int, device: torch.device) -> int:
    """The sum of ``n`` over ranks (e.g. the global batch size); ``n`` on a single process."""
    return sum(gather_sizes(n, device))


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Rows of ``x`` from all ranks in rank order, differentiable, and the offset of this rank's rows.

    Ranks may hold different numbers of rows (e.g. only the samples with report text). Tensors without
    gradients (labels, masks) go through the same path. A single process returns ``(x, 0)``."""
    if world_size() == 1:
        return x, 0
    sizes = gather_sizes(len(x), x.device)
    dtype = x.dtype
    if dtype == torch.bool:
        x = x.to(torch.uint8)
    gathered = _GatherRows.apply(x, sizes)
    return gathered.to(dtype), sum(sizes[: rank()])


@torch.no_grad()
def global_row_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x``'s rows over every rank's rows (no gradient): a batch statistic that does not depend on
    how the global batch is split over ranks."""
    total = x.float().sum(0)
    n = global_count(len(x), x.device)
    if world_size() > 1:
        dist.all_reduce(total)
    return total / max(n, 1)


def global_mean(per_row: torch.Tensor, n_global: int) -> torch.Tensor:
    """This rank's share of a mean over the global batch: ``sum(local rows) * world / n_global``.

    DDP averages gradients over ranks, so these shares average to the mean over all ``n_global`` rows,
    whatever each rank holds; a single process gets the plain mean. With no rows anywhere it is a zero that
    keeps the graph (and DDP's gradient hooks) intact."""
    if n_global == 0:
        return per_row.sum() * 0.0
    return per_row.sum() * (world_size() / n_global)
