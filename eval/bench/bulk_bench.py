"""Bulk scoring speed of one or more exported models side by side, in one run, read against the machine.

    python -m eval.bench.bulk_bench --model triage_model/default_model --model runs/student-onnx

For each model: complaints/s of the model alone (normalise → tokenize → ONNX → heads) and of the whole
``triage predict`` step (plus the escalation scorer), on two text sets from the labeled data: *typical*
(the test split, median ~50 characters) and *long* (test rows over 100 characters). Every figure is
printed beside the CPU model, its ISA and the fp32 matmul GMAC/s measured in the same run, and as a share
of that limit: encoder MACs per complaint × complaints/s ÷ matmul GMAC/s. A figure measured on one CPU
is not a fact about another; the ratio between models is.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from eval.bench.common import machine, machine_line, write_results
from triage_model.escalation import default_scorer
from triage_model.labeled_data import load_labeled
from triage_model.pipeline import triage_texts
from triage_model.predictor import TriagePredictor
from triage_model.tokenization import encode_texts


def encoder_macs(predictor: TriagePredictor, texts: list[str]) -> float:
    """Mean multiply-accumulates the encoder spends per text (projections, attention, FFN; no padding)."""
    import onnx

    graph = onnx.load(str(predictor.model_dir / predictor.meta.onnx_file), load_external_data=False).graph
    layers = len({n.name.split("/")[3] for n in graph.node if n.name.startswith("/encoder/encoder/layer.")})
    h, f = 384, 1536
    lengths = np.array(
        [len(ids) for ids in encode_texts(predictor.tokenizer, [predictor.prepare(t).text for t in texts], predictor.meta.max_length)]
    )
    per_layer = 4 * lengths * h * h + 2 * lengths**2 * h + 2 * lengths * h * f
    return float((layers * per_layer).mean())


def rate(fn, n_texts: int, min_seconds: float) -> float:
    fn()  # warm-up: sessions, jieba, caches
    runs, start = 0, time.perf_counter()
    while runs < 1 or time.perf_counter() - start < min_seconds:
        fn()
        runs += 1
    return n_texts * runs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", required=True, help="exported model directory (repeat to compare)")
    parser.add_argument("--onnx-file", action="append", default=None, help="ONNX file per --model (default: the one it serves)")
    parser.add_argument("--data-dir", type=Path, default=Path("labeled_data"))
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--seconds", type=float, default=5.0, help="minimum timing per cell")
    parser.add_argument("--limit", type=int, default=500, help="texts per set")
    args = parser.parse_args()

    test = load_labeled(args.data_dir).split("test")
    sets = {"typical": [r.text for r in test][: args.limit], "long": [r.text for r in test if len(r.text) > 100][: args.limit]}
    info = machine()
    scorer = default_scorer()
    rows = []
    for i, model_dir in enumerate(args.model):
        onnx_file = args.onnx_file[i] if args.onnx_file and i < len(args.onnx_file) else None
        predictor = TriagePredictor.from_pretrained(model_dir, onnx_file=onnx_file, intra_op_threads=args.threads)
        for name, texts in sets.items():
            macs = encoder_macs(predictor, texts)
            model_rate = rate(lambda p=predictor, t=texts: p.predict(t, batch_size=32), len(texts), args.seconds)
            full_rate = rate(lambda p=predictor, t=texts: triage_texts(p, scorer, t, batch_size=32), len(texts), args.seconds)
            row = {
                "model": predictor.version,
                "onnx_file": onnx_file or predictor.meta.onnx_file,
                "ngram_blend": predictor.ngram is not None,
                "set": name,
                "n": len(texts),
                "median_chars": int(np.median([len(t) for t in texts])),
                "encoder_mmacs_per_text": round(macs / 1e6, 1),
                "model_texts_per_s": round(model_rate, 1),
                "predict_texts_per_s": round(full_rate, 1),
                "share_of_matmul_limit": round(macs * model_rate / (info["fp32_matmul_gmacs"] * 1e9), 3),
            }
            rows.append(row)
            print(row, flush=True)

    lines = [
        machine_line(info),
        "",
        "| model (onnx file, + n-gram blend) | set | median chars | encoder MMAC/text | model texts/s | triage predict texts/s "
        "| share of fp32 matmul limit |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        blend = " + n-gram" if r["ngram_blend"] else ""
        lines.append(
            f"| {r['model']} ({r['onnx_file']}{blend}) | {r['set']} | {r['median_chars']} | {r['encoder_mmacs_per_text']} | "
            f"{r['model_texts_per_s']} | {r['predict_texts_per_s']} | {r['share_of_matmul_limit']:.0%} |"
        )
    table = "\n".join(lines)
    path = write_results("bulk_bench", {"machine": info, "rows": rows}, table)
    print(table)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
