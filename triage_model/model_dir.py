"""The self-describing model directory: what a trained or exported model carries besides weights.

A directory holds ``triage_config.json`` (schema, version, temperatures, data hash, provenance),
``tokenizer.json``, weights (``model.safetensors`` for torch, ``model.onnx`` / ``model.int8.onnx``),
``metrics.json`` and ``MODEL_CARD.md``. The predictor and ``triage promote`` read only this.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field

from triage_model.schema import HEADS, TRIGGER_HEAD, check_schema_compatible

META_FILE = "triage_config.json"
TOKENIZER_FILE = "tokenizer.json"
METRICS_FILE = "metrics.json"
CARD_FILE = "MODEL_CARD.md"
TORCH_REFERENCE_FILE = "torch_reference.json"
"""torch's test-split predictions, recorded at export: the torch side of the int8 parity tests."""
ONNX_FP32_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAMES = [f"{head}_logits" for head in HEADS]
TRIGGER_OUTPUT = f"{TRIGGER_HEAD}_logits"
"""Fourth output of models trained with the trigger head; models without it still load (lexicon only)."""
OUTPUT_NAMES_WITH_TRIGGERS = [*OUTPUT_NAMES, TRIGGER_OUTPUT]
"""What ``triage export`` writes, in ``MultiTaskTriageModel.forward`` order."""
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
STUDENT_MODEL_DIR = Path(__file__).resolve().parent / "student_model"
BUNDLED_MODELS: dict[str, Path] = {"default": DEFAULT_MODEL_DIR, "student": STUDENT_MODEL_DIR}
"""Models shipped inside the package, by name: ``--model student`` (or ``TRIAGE_MODEL_DIR=student``) serves the
distilled 4-layer student — 3× less compute per complaint, fast on AVX2 too — without training or copying it."""


def resolve_model_dir(model_dir: str | Path | None) -> Path:
    """The folder a ``--model`` value means: unset → the shipped default; the name of a bundled model
    (``BUNDLED_MODELS``) → its folder in the package, unless a folder of that name exists where it is run
    (an existing path always wins, so a local ``student/`` directory is never shadowed); else the path."""
    if model_dir is None or str(model_dir) == "":
        return DEFAULT_MODEL_DIR
    path = Path(model_dir)
    if str(model_dir) in BUNDLED_MODELS and not path.exists():
        return BUNDLED_MODELS[str(model_dir)]
    return path


def new_model_version(model_name: str, data_hash: str, at: datetime) -> str:
    """The version a newly made model directory gets: name, minute and data hash, e.g.
    ``triage-e5-small-zh-202612070102-be2382db``. One format for every way a model is made (training, averaging),
    so versions sort by time and show the data they were made on."""
    return f"{model_name}-{at:%Y%m%d%H%M}-{data_hash[:8]}"


class ModelMeta(BaseModel):
    model_name: str
    model_version: str
    schema_: dict = Field(alias="schema")
    max_length: int
    pad_id: int
    temperatures: dict[str, float]
    decision_thresholds: dict[str, dict[str, float]] = Field(default_factory=dict)
    trigger_thresholds: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="per text trigger: veto / rescue / alone operating points of the trigger head, fitted on dev "
        "together with the escalation lexicon (see triage_model.trigger_fusion)",
    )
    data_hash: str
    git_commit: str = "unknown"
    seed: int = 0
    created_at: str = ""
    train_config: dict = Field(default_factory=dict)
    onnx_file: str | None = None
    ngram_weights: dict[str, float] = Field(
        default_factory=dict,
        description="per head weight of the shipped character n-gram scorer (ngram.npz) in the served probabilities, "
        "chosen on dev by `triage blend`; empty = the encoder alone",
    )
    ngram_temperatures: dict[str, float] = Field(
        default_factory=dict, description="per head temperature that re-calibrates the blended probabilities (fitted on dev)"
    )

    model_config = {"populate_by_name": True, "protected_namespaces": ()}


class ModelLoadError(RuntimeError):
    """A model directory is missing, incomplete or incompatible; the message says which file and why."""


def read_meta(model_dir: Path) -> ModelMeta:
    path = Path(model_dir) / META_FILE
    if not path.exists():
        raise ModelLoadError(f"{model_dir}: not a model directory (no {META_FILE})")
    try:
        meta = ModelMeta.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path}: unreadable model metadata: {err}") from err
    try:
        check_schema_compatible(meta.schema_)
    except ValueError as err:
        raise ModelLoadError(f"{path}: {err}") from err
    return meta


def write_meta(model_dir: Path, meta: ModelMeta) -> None:
    (Path(model_dir) / META_FILE).write_text(json.dumps(meta.model_dump(by_alias=True), ensure_ascii=False, indent=2), encoding="utf-8")


def read_metrics(model_dir: Path) -> dict:
    path = Path(model_dir) / METRICS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
