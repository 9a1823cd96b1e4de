"""FSDP (PyTorch's ``fully_shard``, FSDP2) for towers too large to replicate on every rank.

Each transformer block (timm ``Block``, Hugging Face ``*Layer``) becomes its own shard unit, then the whole
model + objective module; parameters become DTensors sharded over ranks. Training states and the final
encoder are written from full (gathered) state dicts, so a sharded run saves the same files as a DDP run.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
BLOCK_SUFFIXES = ("Block", "Layer")


def shard_units(module: nn.Module) -> list[nn.Module]:
    """The transformer blocks of every tower inside ``module``, outermost first, none nested in another."""
    units: list[nn.Module] = []
    for child in module.modules():
        if child is not module and type(child).__name__.endswith(BLOCK_SUFFIXES):
            if not any(child in set(unit.modules()) for unit in units):
                units.append(child)
    return units


def shard(module: nn.Module, device: torch.device) -> nn.Module:
    """Shard each block, then the root (which then owns the remaining parameters), over all ranks on
    ``device``'s type (FSDP's own default picks CUDA whenever a GPU exists, also for a gloo run on the CPU)."""
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for unit in shard_units(module):
        fully_shard(unit, mesh=mesh)
    fully_shard(module, mesh=mesh)
    return module


def full_model_state(module: nn.Module, every_rank: bool = False) -> dict[str, torch.Tensor]:
    """Gathered state dict of a sharded module (a collective: every rank must call it): on rank 0 only, in
    CPU memory, or with ``every_rank`` on every rank, on the module's device."""
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True) if every_rank else FULL)


def full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    return get_optimizer_state_dict(module, optimizer, options=FULL)


def load_full_model_state(module: nn.Module, model_state: dict) -> None:
    """Scatter a full model state dict (held by every rank) back into the shards. The root is resharded first:
    after a forward pass without backward (validation) its parameters are still gathered."""
    module.reshard()
    set_model_state_dict(module, model_state, options=StateDictOptions(full_state_dict=True))


def load_full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, optimizer_state: dict) -> None:
    """Scatter a full optimizer state back. Parameters the state has none for (no gradient yet, as DINO's frozen
    prototypes) stay without: torch would otherwise make them one by a zero-gradient step, counting it."""
    saved = set(optimizer_state["state"])
    set_optimizer_state_dict(module, optimizer, optimizer_state,
                             options=StateDictOptions(full_state_dict=True, strict=False))
    names = {param: name for name, param in module.named_parameters()}
    for param in [p for p in optimizer.state if names.get(p) not in saved]:
        del optimizer.state[param]
