"""Model throughput: onnxruntime fp32 vs onnxruntime int8 of one exported model, in one run.

    python -m eval.bench.model_bench --onnx-model triage_model/default_model

Batch 1 and 16, texts of 20/100/400 characters; prints a Markdown table and the int8/fp32 ratio,
writes eval/bench/results/model_bench.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from eval.bench.common import machine, machine_line, text_of_length, write_results
from triage_model.model_dir import ONNX_FP32_FILE, ONNX_INT8_FILE, TOKENIZER_FILE, read_meta
from triage_model.tokenization import encode_texts, load_tokenizer, pad_batch

LENGTHS = (20, 100, 400)
BATCHES = (1, 16)


def _time(fn, min_seconds: float, min_runs: int = 5) -> float:
    fn()  # warm-up
    runs, start = 0, time.perf_counter()
    while runs < min_runs or time.perf_counter() - start < min_seconds:
        fn()
        runs += 1
    return (time.perf_counter() - start) / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx-model", type=Path, required=True, help="exported model dir (model.onnx and/or model.int8.onnx)")
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum timing per cell")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads for both runtimes")
    args = parser.parse_args()

    import onnxruntime as ort

    meta = read_meta(args.onnx_model)
    tok = load_tokenizer(args.onnx_model / TOKENIZER_FILE)
    options = ort.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
    runners = {}
    for name, file in (("ort_fp32", ONNX_FP32_FILE), ("ort_int8", ONNX_INT8_FILE)):
        if (args.onnx_model / file).exists():
            sess = ort.InferenceSession(str(args.onnx_model / file), options, providers=["CPUExecutionProvider"])
            runners[name] = lambda ids, mask, s=sess: s.run(None, {"input_ids": ids, "attention_mask": mask})
    rows = []
    for length in LENGTHS:
        for batch in BATCHES:
            texts = [text_of_length(length, seed=i) for i in range(batch)]
            ids, mask = pad_batch(encode_texts(tok, texts, meta.max_length), meta.pad_id)
            ids_np, mask_np = np.array(ids, dtype=np.int64), np.array(mask, dtype=np.int64)
            cell = {"chars": length, "batch": batch, "tokens": ids_np.shape[1]}
            for name, run in runners.items():
                seconds = _time(lambda run=run, ids=ids_np, mask=mask_np: run(ids, mask), args.seconds)
                cell[f"{name}_ms"] = round(seconds * 1000, 2)
                cell[f"{name}_texts_per_s"] = round(batch / seconds, 1)
            if "ort_fp32_ms" in cell and "ort_int8_ms" in cell:
                cell["int8_vs_fp32_speedup"] = round(cell["ort_fp32_ms"] / cell["ort_int8_ms"], 2)
            rows.append(cell)
            print(cell, flush=True)

    names = list(runners)
    header = "| chars | batch | tokens | " + " | ".join(f"{n} ms (texts/s)" for n in names) + " | int8 vs fp32 |"
    lines = [header, "|" + "---|" * (4 + len(names))]
    for c in rows:
        cells = " | ".join(f"{c[f'{n}_ms']} ({c[f'{n}_texts_per_s']})" for n in names)
        lines.append(f"| {c['chars']} | {c['batch']} | {c['tokens']} | {cells} | {c.get('int8_vs_fp32_speedup', '–')}× |")
    info = machine()
    table = machine_line(info) + "\n\n" + "\n".join(lines)
    path = write_results("model_bench", {"machine": info, "model_version": meta.model_version, "rows": rows}, table)
    print(table)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
