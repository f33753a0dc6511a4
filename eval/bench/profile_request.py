"""Where the time of one complaint goes: a per-stage table of the request path, for a model.

    python -m eval.bench.profile_request --model triage_model/default_model

Stages, each timed on its own over the same texts (batch 1, as a single API request runs): normalisation
(NFKC + OpenCC 繁→简), tokenisation, the ONNX run, the heads (calibrated softmax, thresholds → result),
escalation (lexicon scan with jieba, trigger fusion, tier, SLA deadlines) and JSON serialisation of the
response. Warm: every cache (ONNX session, jieba dictionary, OpenCC) is loaded before timing, as the
service does at start-up. The HTTP layer itself is measured by ``eval.bench.http_bench``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from eval.bench.common import machine, machine_line, write_results
from triage_model.escalation import default_scorer
from triage_model.labeled_data import load_labeled
from triage_model.model_dir import INPUT_NAMES
from triage_model.normalize import normalize_text
from triage_model.predictor import TriagePredictor
from triage_model.tokenization import encode_texts_with_cuts, pad_batch


def per_text_ms(fn, items: list, repeat: int) -> float:
    for item in items[:5]:
        fn(item)  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        for item in items:
            fn(item)
    return 1000 * (time.perf_counter() - start) / (repeat * len(items))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="exported model directory (default: the shipped model)")
    parser.add_argument("--data-dir", type=Path, default=Path("labeled_data"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=200, help="texts from the test split")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    texts = [r.text for r in load_labeled(args.data_dir).split("test")][: args.n]
    predictor = TriagePredictor.from_pretrained(args.model, intra_op_threads=args.threads)
    scorer = default_scorer()
    scorer.warmup()
    meta = predictor.meta
    normalised = [normalize_text(t) for t in texts]
    encoded = [encode_texts_with_cuts(predictor.tokenizer, [t], meta.max_length)[0] for t in normalised]

    def onnx_run(ids: list[list[int]]) -> list[np.ndarray]:
        input_ids, mask = pad_batch(ids, meta.pad_id)
        feeds = {INPUT_NAMES[0]: np.asarray(input_ids, dtype=np.int64), INPUT_NAMES[1]: np.asarray(mask, dtype=np.int64)}
        return predictor.session.run(predictor.output_names, feeds)

    logits = [dict(zip(predictor.widths, onnx_run(ids), strict=True)) for ids in encoded]
    results = predictor.predict(texts, batch_size=1)
    scored = [scorer.score_into(r, t) for r, t in zip(results, texts, strict=True)]
    stages = {
        "normalise (NFKC, OpenCC)": per_text_ms(normalize_text, texts, args.repeat),
        "tokenise": per_text_ms(lambda t: encode_texts_with_cuts(predictor.tokenizer, [t], meta.max_length), normalised, args.repeat),
        "ONNX encoder + heads": per_text_ms(onnx_run, encoded, args.repeat),
        "calibrate + decide → result": per_text_ms(lambda lg: predictor._result(predictor._calibrated(lg), 0, False), logits, args.repeat),
        "escalation (lexicon, jieba, fusion, tier, SLA)": per_text_ms(
            lambda pair: scorer.score_into(pair[0], pair[1]), list(zip(results, texts, strict=True)), args.repeat
        ),
        "JSON response": per_text_ms(lambda r: r.model_dump_json(exclude_none=True), scored, args.repeat),
    }
    total = sum(stages.values())
    info = machine()
    median = int(np.median([len(t) for t in texts]))
    lines = [
        machine_line(info),
        f"model {predictor.version} ({meta.onnx_file}), {len(texts)} test-split texts (median {median} chars), batch 1",
        "",
        "| stage | ms per complaint | share |",
        "|---|---|---|",
        *(f"| {name} | {ms:.2f} | {ms / total:.0%} |" for name, ms in stages.items()),
        f"| **total** | **{total:.2f}** | 100% |",
    ]
    table = "\n".join(lines)
    path = write_results("profile_request", {"machine": info, "model": predictor.version, "stages_ms": stages}, table)
    print(table)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
