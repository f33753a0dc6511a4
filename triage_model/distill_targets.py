"""The file format of distillation targets, shared by whoever writes them (``eval.ensemble`` through
``triage distill-targets``) and the student's training (``training.distill``).

An ``.npz`` holding, per output, one row per text (per head: logits or log-probabilities the student
reads like logits; for the trigger head: logits), and a JSON ``meta`` entry with the format, the hash
of the exact texts they belong to and their provenance (teachers, baseline, weights), so soft labels
are reproducible and can never be paired with the wrong texts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from triage_model.predictor import TriagePredictor
from triage_model.schema import HEADS, TRIGGER_HEAD

TARGETS_FORMAT = "triage-distill-targets/1"
OUTPUTS = (*HEADS, TRIGGER_HEAD)


def texts_key(texts: Sequence[str]) -> str:
    """A short hash of the exact texts, in order, that targets belong to."""
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def save_targets(path: Path, texts: Sequence[str], targets: dict[str, np.ndarray], provenance: dict) -> Path:
    missing = [name for name in OUTPUTS if name not in targets]
    if missing or any(len(targets[name]) != len(texts) for name in OUTPUTS):
        raise ValueError(f"targets must have one row per text for every output {OUTPUTS}; missing {missing}")
    return _save_keyed(path, texts, {n: targets[n] for n in OUTPUTS}, TARGETS_FORMAT, provenance)


def load_targets(path: Path, texts: Sequence[str]) -> tuple[dict[str, np.ndarray], dict]:
    """Targets and their provenance; ``ValueError`` if the file is not targets for exactly ``texts``."""
    return _load_keyed(path, texts, OUTPUTS, TARGETS_FORMAT, "a distillation-targets file", "triage distill-targets")


def _save_keyed(path: Path, texts: Sequence[str], arrays: dict[str, np.ndarray], file_format: str, provenance: dict) -> Path:
    """Arrays with one row per text, stored beside a ``meta`` entry naming the format and the hash of the texts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": file_format, "texts_key": texts_key(texts), "n": len(texts), **provenance}
    np.savez_compressed(path, meta=np.array(json.dumps(meta, ensure_ascii=False)), **arrays)
    return path


def _load_keyed(
    path: Path, texts: Sequence[str], names: Sequence[str], file_format: str, what: str, command: str
) -> tuple[dict[str, np.ndarray], dict]:
    """``names``' arrays and the meta of a ``_save_keyed`` file; ``ValueError`` unless it was made for exactly ``texts``."""
    try:
        with np.load(Path(path)) as stored:
            meta = json.loads(str(stored["meta"]))
            arrays = {name: stored[name] for name in names}
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: not {what} ({err})") from None
    if meta.get("format") != file_format:
        raise ValueError(f"{path}: format {meta.get('format')!r}, expected {file_format!r}")
    if meta.get("texts_key") != texts_key(texts):
        raise ValueError(f"{path}: made for other texts (data or distillation settings changed); run `{command}` again")
    return arrays, meta


def logits_with_progress(
    predictor: TriagePredictor, texts: Sequence[str], batch_size: int = 32, chunk: int = 2048
) -> dict[str, np.ndarray]:
    """The predictor's raw logits over ``texts``, scored in chunks under a progress bar with an ETA: a teacher
    labels ~60,000 texts for a student, which runs for half an hour and would otherwise say nothing."""
    parts: dict[str, list[np.ndarray]] = {}
    with tqdm(total=len(texts), desc=f"teacher {predictor.version}", unit="text") as bar:
        for start in range(0, len(texts), chunk):
            piece = list(texts[start : start + chunk])
            for name, values in predictor.logits(piece, batch_size).items():
                parts.setdefault(name, []).append(values)
            bar.update(len(piece))
    return {name: np.concatenate(values) for name, values in parts.items()}


NGRAM_OOF_FORMAT = "triage-ngram-oof/1"


def save_ngram_probs(path: Path, texts: Sequence[str], probs: dict[str, np.ndarray], available: np.ndarray, provenance: dict) -> Path:
    """The n-gram scorer's probabilities for each distillation text (``triage ngram-oof``), for blend-aware distilling.

    ``available`` marks the rows that have an honest probability: one from an n-gram model that never saw the
    text's source rows. The other rows (a pair joined from two folds) hold zeros and train as plain distillation."""
    if set(probs) != set(HEADS) or any(len(p) != len(texts) for p in probs.values()) or len(available) != len(texts):
        raise ValueError(f"n-gram probabilities need one row per text for every head {tuple(HEADS)}")
    arrays = {h: np.asarray(probs[h], dtype=np.float32) for h in HEADS}
    return _save_keyed(path, texts, {**arrays, "available": np.asarray(available, bool)}, NGRAM_OOF_FORMAT, provenance)


def load_ngram_probs(path: Path, texts: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Per-head probabilities, the availability mask and the provenance; ``ValueError`` if not made for ``texts``."""
    arrays, meta = _load_keyed(path, texts, (*HEADS, "available"), NGRAM_OOF_FORMAT, "an n-gram probabilities file", "triage ngram-oof")
    available = arrays.pop("available")
    return arrays, available, meta
