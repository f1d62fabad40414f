"""Flat-LoRA: LoRA trained for a flat loss landscape in the full parameter space (Li et al.,
"Flat-LoRA: Low-Rank Adaptation over a Flat Loss Landscape").

Each step perturbs every merged LoRA weight W' = W + s * B A  ([out, n]) with random noise

    eps_ij ~ N(0, (sigma_t^2 / n) * ||W'_i,:||^2)                      (filter-wise noise)
    sigma_t = sigma * (1 - cos(pi * t / T)) / 2                        (cosine ramp)

and takes the gradient of L(W' + eps) with respect to A and B. The noise is never stored and
never added to W in place: the frozen base linear computes x (W + eps)^T through a custom
autograd function that forms W + eps inside forward and again, from (seed, step, layer),
inside backward, so one layer's perturbed weight exists at a time. The extra state is one
row scale per output row of each adapted layer (O(rows)) plus the seed. Layers whose adapters
are disabled (the reference forward of DPO through PEFT's `disable_adapter()`) get no noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_SEED_MODULUS = 2**61 - 1


@dataclass(frozen=True)
class FlatLoRAConfig:
    sigma: float = 0.05  # the paper's default noise level for LLM fine-tuning
    seed: int = 0
    schedule: str = "cosine"  # cosine | constant

    def __post_init__(self) -> None:
        if self.sigma < 0:
            raise ValueError("sigma must be >= 0")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError("schedule must be cosine or constant")


def ramp(progress: float, schedule: str = "cosine") -> float:
    """The factor on sigma at a fraction `progress` in [0, 1] of training."""
    if schedule == "constant":
        return 1.0
    return (1.0 - math.cos(math.pi * min(max(progress, 0.0), 1.0))) / 2.0


def noise(row_scale: torch.Tensor, n_in: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """eps [out, n_in]: standard normal from `seed`, row i scaled by row_scale[i] [out]."""
    generator = torch.Generator(device=row_scale.device).manual_seed(seed)
    z = torch.randn(
        row_scale.shape[0], n_in, generator=generator, device=row_scale.device, dtype=torch.float32
    )
    return (z * row_scale.float().unsqueeze(1)).to(dtype)


class _PerturbedLinear(torch.autograd.Function):
    """x (W + eps)^T for a frozen W, with eps regenerated in backward instead of saved.

    The perturbed weight exists only inside forward and inside backward (one layer at a
    time); autograd keeps a reference to W, the row scales and the seed.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, row_scale: torch.Tensor, seed: int
    ) -> torch.Tensor:
        ctx.save_for_backward(weight, row_scale)
        ctx.seed = seed
        perturbed = weight + noise(row_scale, weight.shape[1], seed, weight.dtype)
        return x.to(weight.dtype) @ perturbed.T

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        weight, row_scale = ctx.saved_tensors
        perturbed = weight + noise(row_scale, weight.shape[1], ctx.seed, weight.dtype)
        return grad_output @ perturbed, None, None, None


def merged_weight(layer: nn.Module) -> torch.Tensor:
    """W + s * B A of a PEFT LoRA layer (active adapters), [out, n]."""
    weight = layer.base_layer.weight
    for name in layer.active_adapters:
        if name in layer.lora_A:
            delta = layer.lora_B[name].weight @ layer.lora_A[name].weight
            weight = weight + layer.scaling[name] * delta.to(weight.dtype)
    return weight


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer) and isinstance(module.base_layer, nn.Linear)
    ]


class FlatLoRA:
    """Attaches the perturbation to every LoRA linear layer of a PEFT model.

    Call `begin_step(step, total_steps)` before each step's forward passes.
    """

    def __init__(self, model: nn.Module, config: FlatLoRAConfig) -> None:
        self.config = config
        self.layers = lora_layers(model)
        if not self.layers:
            raise ValueError("the model has no LoRA linear layers to perturb")
        self.row_scales: dict[int, torch.Tensor] = {}
        self.step = 0
        self.sigma_t = 0.0  # no noise before the first begin_step
        for index, (_, module) in enumerate(self.layers):
            if module.base_layer.weight.requires_grad:
                raise ValueError("Flat-LoRA perturbs frozen base weights; this one is trainable")
            module.base_layer.forward = self._forward(index, module)
        self._restore = [module.base_layer for _, module in self.layers]

    def seed_for(self, step: int, index: int) -> int:
        return ((self.config.seed * 1_000_003 + step) * 4099 + index) % _SEED_MODULUS

    def sigma_at(self, step: int, total_steps: int) -> float:
        return self.config.sigma * ramp(step / max(total_steps, 1), self.config.schedule)

    def begin_step(self, step: int, total_steps: int) -> None:
        """Starts a step: its seeds and sigma_t; the row scales follow from the step's A and B
        at each layer's first forward (where an FSDP-sharded layer's weights are whole)."""
        self.step = step
        self.sigma_t = self.sigma_at(step, total_steps)
        self.row_scales.clear()

    @torch.no_grad()
    def row_scale(self, index: int) -> torch.Tensor:
        """sigma_t * ||W'_i|| / sqrt(n) of layer `index`'s rows, [out], once per step."""
        if index not in self.row_scales:
            weight = merged_weight(self.layers[index][1]).float()
            norms = torch.linalg.vector_norm(weight, dim=1)
            self.row_scales[index] = self.sigma_t * norms / math.sqrt(weight.shape[1])
        return self.row_scales[index]

    def layer_noise(self, index: int) -> torch.Tensor:
        """The eps of layer `index` at the current step (for inspection and tests)."""
        module = self.layers[index][1]
        return noise(
            self.row_scale(index),
            module.base_layer.in_features,
            self.seed_for(self.step, index),
            module.base_layer.weight.dtype,
        )

    def _forward(self, index: int, module: nn.Module) -> Any:
        """The base linear's forward: x (W + eps)^T + b while the adapter is active."""
        base = module.base_layer

        def forward(x: torch.Tensor) -> torch.Tensor:
            if module.disable_adapters or not self.sigma_t:
                return nn.functional.linear(x, base.weight, base.bias)
            seed = self.seed_for(self.step, index)
            out = _PerturbedLinear.apply(x, base.weight, self.row_scale(index), seed)
            return out if base.bias is None else out + base.bias

        return forward

    def extra_state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.row_scales.values())

    def remove(self) -> None:
        """Gives every base layer its own forward back."""
        for base in self._restore:
            del base.forward
        self._restore.clear()
