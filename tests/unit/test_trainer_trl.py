"""kiln's DPO loss equals TRL's sigmoid DPO on the same batch and model."""

import tempfile
from pathlib import Path

import torch

from services.trainer.core.dpo import DPOConfig, dpo_loss
from services.trainer.core.logprobs import token_logps


def test_dpo_loss_equals_trl(tiny_model: Path) -> None:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    pairs = [
        {"prompt": "Q: 3*4?", "chosen": " 12, since 3*4 = 12", "rejected": " 13"},
        {"prompt": "Q: 2+2?", "chosen": " 4", "rejected": " 5, because 2+2 = 5"},
    ]
    trainer = DPOTrainer(
        model=model,
        args=TRLDPOConfig(
            output_dir=tempfile.mkdtemp(),
            per_device_train_batch_size=2,
            beta=0.1,
            report_to=[],
            use_cpu=True,
            max_length=64,
        ),
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    batch = next(iter(trainer.get_train_dataloader()))
    policy_model = trainer.model
    torch.manual_seed(0)
    with torch.no_grad():  # a non-zero adapter so that policy and reference differ
        for name, p in policy_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    policy_model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(policy_model, batch).item()
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "completion_mask")}
        policy = token_logps(policy_model, **inputs).sum(-1)
        with policy_model.disable_adapter():
            reference = token_logps(policy_model, **inputs).sum(-1)
    ours = dpo_loss(policy[:2], policy[2:], reference[:2], reference[2:], DPOConfig(beta=0.1))
    assert abs(trl_loss - 0.6931) > 1e-3  # the pairs really separate
    assert abs(ours.loss.item() - trl_loss) < 1e-6
