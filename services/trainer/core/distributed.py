"""Collectives of a data-parallel training run over torch.distributed (gloo on CPU, NCCL on
GPU), and the process-group setup every rank runs.

Two ways to share the work: data parallel, where every rank holds the whole model and only
LoRA's trainable gradients are all-reduced (the base weights never change); and FSDP (PyTorch's
fully_shard), where each decoder layer's weights, frozen and trainable alike, are sharded over
the ranks and gathered one layer at a time, for models that do not fit one device."""

from __future__ import annotations

import resource
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


def init_process_group(rank: int, world_size: int, address: str, port: int) -> None:
    """Joins the run's group: NCCL when CUDA is visible, else gloo."""
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group(
        backend,
        init_method=f"tcp://{address}:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(minutes=30),
    )


def sum_gradients(parameters: Sequence[torch.nn.Parameter]) -> None:
    """Sums every parameter's gradient over the ranks, in one flat all-reduce (a rank whose
    share of the batch was empty contributes zeros)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for parameter, grad in zip(parameters, grads, strict=True):
        size = grad.numel()
        parameter.grad = flat[offset : offset + size].view_as(grad).clone()
        offset += size


def sum_values(values: Sequence[float]) -> list[float]:
    """The sum of each value over the ranks."""
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces GPU tensors only
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: allocated CUDA memory, or on CPU the resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def shard_model(model: Any) -> None:
    """FSDP: fully_shard each decoder layer, then the rest of the model (embeddings, norm, head).
    Gradients are summed over the ranks (divide factor 1): each rank's loss is already its
    share of the global batch's mean."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    for layer in model.get_base_model().model.layers:
        fully_shard(layer)
    fully_shard(model)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # gloo has no premultiplied sum


def full_trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """The trainable (LoRA) weights gathered whole from an FSDP model, on CPU (a collective:
    every rank calls it; rank 0 receives the weights, the others an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    return get_model_state_dict(model, options=options)


def full_optimizer_state(model: Any, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """An FSDP model's optimizer state gathered whole, keyed by parameter name, on rank 0 (a
    collective, like full_trainable_state)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def load_full_optimizer_state(
    model: Any, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """full_optimizer_state's result back into an FSDP model's sharded optimizer."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(model, optimizer, state, options=options)
