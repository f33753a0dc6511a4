"""What int8 costs one exported model: dev macro-F1 of the encoder alone (argmax, no n-gram blend, no thresholds)
from its fp32 graph (``model.onnx``) and from its served int8 graph (``model.int8.onnx``), and how often the two agree.

Why a tool of its own: ``triage evaluate`` scores the model as served, with the blend and the 一级 threshold on top,
and those move with every refit; ``triage export`` checks parity on a handful of texts only. Whether a student
trained with the quantization in mind (``quant_aware``) gained what it was meant to is a question about the two
graphs on the same rows, and nothing else. The fp32 graph equals torch within ~5e-6 (export checks it), so no
torch is needed here.

    python -m eval.int8_cost runs/student-v19-onnx runs/student-v18b-onnx --split dev
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from triage_model.labeled_data import gold_ids, load_labeled
from triage_model.metrics import head_metrics
from triage_model.model_dir import ONNX_FP32_FILE, ONNX_INT8_FILE
from triage_model.predictor import TriagePredictor
from triage_model.schema import HEADS


def int8_cost(model_dir: Path, data_dir: Path, split: str) -> dict[str, dict[str, float]]:
    """Per head: ``fp32`` and ``int8`` macro-F1 on ``split``, and ``agreement`` of their argmax."""
    if not (model_dir / ONNX_FP32_FILE).exists():
        raise FileNotFoundError(f"{model_dir}: no {ONNX_FP32_FILE} (the fp32 graph `triage export` writes beside {ONNX_INT8_FILE})")
    rows = load_labeled(data_dir).split(split)
    if not rows:
        raise ValueError(f"{data_dir}: the {split} split is empty")
    texts, gold = [r.text for r in rows], gold_ids(rows)
    graphs = (ONNX_FP32_FILE, ONNX_INT8_FILE)
    probs = {name: TriagePredictor.from_pretrained(model_dir, onnx_file=name).encoder_proba(texts) for name in graphs}
    return {
        h: {
            "fp32": head_metrics(probs[ONNX_FP32_FILE][h], gold[h], HEADS[h])["macro_f1"],
            "int8": head_metrics(probs[ONNX_INT8_FILE][h], gold[h], HEADS[h])["macro_f1"],
            "agreement": float(np.mean(probs[ONNX_FP32_FILE][h].argmax(1) == probs[ONNX_INT8_FILE][h].argmax(1))),
        }
        for h in HEADS
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="exported model directories (model.onnx + model.int8.onnx)")
    parser.add_argument("--data", type=Path, default=Path("labeled_data"), help="labeled data directory")
    parser.add_argument("--split", default="dev", choices=["train", "dev", "test"], help="never tune on test")
    args = parser.parse_args(argv)
    print(f"| {args.split}, encoder argmax | " + " | ".join(f"{h} fp32 → int8 (agree)" for h in HEADS) + " | mean int8 |")
    print("|---" * (len(HEADS) + 2) + "|")
    for model_dir in args.models:
        cost = int8_cost(model_dir, args.data, args.split)
        cells = [f"{c['fp32']:.4f} → {c['int8']:.4f} ({c['agreement']:.3f})" for c in cost.values()]
        print(f"| {model_dir} | " + " | ".join(cells) + f" | {np.mean([c['int8'] for c in cost.values()]):.4f} |")


if __name__ == "__main__":
    main()
