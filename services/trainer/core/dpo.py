"""Direct Preference Optimization, sigmoid loss (Rafailov et al. 2023, Eq. 7), with optional
per-token weights (BMC, RISE use them through `weighted_logps`).

    L = -log sigma(beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))])

equal to TRL's `loss_type="sigmoid"` DPO on the same log-probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DPOConfig:
    beta: float = 0.1


@dataclass
class DPOOutput:
    losses: torch.Tensor  # [B]
    chosen_rewards: torch.Tensor  # [B], beta * (log pi(y_w) - log ref(y_w)), detached
    rejected_rewards: torch.Tensor  # [B]

    @property
    def loss(self) -> torch.Tensor:
        return self.losses.mean()

    def metrics(self) -> dict[str, float]:
        margins = self.chosen_rewards - self.rejected_rewards
        return {
            "rewards/chosen": self.chosen_rewards.mean().item(),
            "rewards/rejected": self.rejected_rewards.mean().item(),
            "rewards/margin": margins.mean().item(),
            "rewards/accuracy": (margins > 0).float().mean().item(),
        }


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    config: DPOConfig,
) -> DPOOutput:
    """All inputs [B]: summed (or weighted) completion log-probs of each pair."""
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    losses = -F.logsigmoid(config.beta * (chosen_ratio - rejected_ratio))
    return DPOOutput(
        losses,
        (config.beta * chosen_ratio).detach(),
        (config.beta * rejected_ratio).detach(),
    )


def weighted_logps(token_logps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_t w_t log pi(y_t): token_logps and weights [B, T] (weights 0 off the completion)."""
    return (token_logps * weights).sum(dim=-1)
