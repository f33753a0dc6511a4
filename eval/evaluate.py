"""``triage evaluate``: measure an exported (ONNX) model on a labeled split, as it is served."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eval.metrics import head_metrics
from training.data import LabeledRow, load_labeled
from triage_model.predictor import TriagePredictor
from triage_model.schema import HEADS, label_to_id


def split_rows(data_dir: Path, split: str) -> list[LabeledRow]:
    data = load_labeled(data_dir)
    if data.problems:
        raise ValueError(f"{len(data.problems)} data problems, first: {data.problems[0]}; run `triage data validate`")
    rows = data.split(split)
    if not rows:
        raise ValueError(f"no rows in split {split!r} under {data_dir}")
    return rows


def predict_rows(predictor: TriagePredictor, rows: list[LabeledRow]) -> dict[str, np.ndarray]:
    return predictor.predict_proba([predictor.prepare(r.text).text for r in rows])


def evaluate_split(model_dir: Path | None, data_dir: Path, split: str = "test") -> dict:
    predictor = TriagePredictor.from_pretrained(model_dir)
    rows = split_rows(data_dir, split)
    probs = predict_rows(predictor, rows)
    heads = {h: head_metrics(probs[h], [label_to_id(h, getattr(r, h)) for r in rows], HEADS[h]) for h in HEADS}
    return {"model_version": predictor.version, "split": split, "n": len(rows), "heads": heads}
