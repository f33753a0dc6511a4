"""The torch multi-task model: one shared XLM-R encoder, mean pooling, three softmax heads and one
multi-label (sigmoid) text-trigger head.

Training and export only: serving runs the exported ONNX graph and never imports this module (or torch).
Mean pooling matches how multilingual-e5 was pre-trained, so the pooled vector is meaningful from the
first step and the heads learn quickly even on small data.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import XLMRobertaConfig, XLMRobertaModel

from triage_model.schema import HEADS, TEXT_TRIGGERS

WEIGHTS_FILE = "model.safetensors"
ENCODER_CONFIG_FILE = "config.json"


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class MultiTaskTriageModel(nn.Module):
    """Encoder + one linear head per entry of ``HEADS`` + the trigger head.

    ``forward`` returns the logits of each head in HEADS order, then the text-trigger logits.
    """

    def __init__(self, config: XLMRobertaConfig, dropout: float = 0.1) -> None:
        super().__init__()
        self.config = config
        self.encoder = XLMRobertaModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(config.hidden_size, len(labels)) for name, labels in HEADS.items()})
        self.trigger_head = nn.Linear(config.hidden_size, len(TEXT_TRIGGERS))

    @classmethod
    def from_encoder(cls, encoder_dir: Path, dropout: float = 0.1) -> MultiTaskTriageModel:
        """Fresh heads on top of a pretrained encoder checkpoint."""
        encoder = XLMRobertaModel.from_pretrained(encoder_dir, add_pooling_layer=False)
        model = cls(encoder.config, dropout)
        model.encoder = encoder
        return model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self._heads(hidden, attention_mask)

    def forward_with_hidden(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """The logits of ``forward`` and every layer's hidden states (embeddings first): what a student
        distilled layer by layer is compared on. Kept apart from ``forward`` so the exported graph stays lean."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return self._heads(out.last_hidden_state, attention_mask), out.hidden_states

    def _heads(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled = self.dropout(mean_pool(hidden, attention_mask))
        return (*(self.heads[name](pooled) for name in HEADS), self.trigger_head(pooled))

    def save(self, out_dir: Path) -> None:
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out_dir / WEIGHTS_FILE))
        (out_dir / ENCODER_CONFIG_FILE).write_text(self.config.to_json_string(), encoding="utf-8")

    @classmethod
    def load(cls, model_dir: Path, dropout: float = 0.1) -> MultiTaskTriageModel:
        from safetensors.torch import load_file

        model_dir = Path(model_dir)
        config = XLMRobertaConfig(**json.loads((model_dir / ENCODER_CONFIG_FILE).read_text(encoding="utf-8")))
        model = cls(config, dropout)  # dropout is a training choice, not part of the weights
        model.load_state_dict(load_file(str(model_dir / WEIGHTS_FILE)))
        return model.eval()
