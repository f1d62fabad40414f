"""The trainer on a GPU (skipped without CUDA): a bf16-autocast LoRA step, and a one-process
NCCL group running the all-reduce path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.trainer.runs import build_trainer
from tests.unit.test_trainer_scale import BASE, rows

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_bf16_step_on_cuda(tiny_model: Path) -> None:
    from services.trainer.core.training import TrainConfig

    config = TrainConfig(batch_size=4, mixed_precision="bf16", **BASE)
    trainer = build_trainer(tiny_model, rows(8), config)
    trainer.model.cuda()
    trainer.device = torch.device("cuda")
    result = trainer.train_step()
    assert torch.isfinite(torch.tensor(result.loss)) and result.metrics["peak_memory_mb"] > 0


def test_nccl_world_size_one(tiny_model: Path) -> None:
    from services.cli.embedded import free_port
    from services.trainer.core.distributed import init_process_group, sum_values
    from services.trainer.core.training import TrainConfig

    init_process_group(0, 1, "127.0.0.1", free_port())
    try:
        assert torch.distributed.get_backend() == "nccl"
        assert sum_values([1.5, 2.0]) == [1.5, 2.0]
        config = TrainConfig(batch_size=4, **BASE)
        trainer = build_trainer(tiny_model, rows(8), config)
        assert trainer.train_step().step == 1
    finally:
        torch.distributed.destroy_process_group()
