"""Collectives of a data-parallel training run over torch.distributed (gloo on CPU, NCCL on
GPU), and the process-group setup every rank runs. Only LoRA's trainable parameters are
all-reduced: the base weights never change."""

from __future__ import annotations

import resource
from collections.abc import Sequence
from datetime import timedelta

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
