"""The speed targets of the fast-student issue, for several models side by side, in one run.

    python -m eval.bench.serving_bench --model triage_model/default_model --model runs/v2-teacher-onnx \
        --model runs/student-onnx --label shipped --label teacher --label student

For each model, on the same machine and texts (test-split complaints, median ~50 characters):

* **bulk** — ``triage predict``'s path in-process (normalise → tokenize → ONNX → heads → escalation),
  batch 32, complaints/s, and the encoder's share of the fp32 matmul limit measured in this run;
* **HTTP, 1 client** — p50 / p99 of single ``POST /v1/triage`` requests, one at a time;
* **HTTP, 32 clients** — single-complaint requests from 32 concurrent clients: complaints/s as a share of
  the bulk rate of the same texts (what dynamic batching recovers), p50 / p99; once from the Python
  client (httpx, what a Python intake system costs) and, where the ``wrk`` binary is installed, once from
  wrk (a C client that leaves the 2 cores to the server), with the server's CPU-ms per complaint;
* **RSS** — the server's resident memory after ≥ 1,000 requests, the last of them the mixed 20–400-
  character load.

The server runs with a deep queue (no load shedding; that is ``load_bench``). The client shares the
machine with the server, so on 2 cores the HTTP figures understate the server. Every figure is printed
beside the CPU model, its ISA and the fp32 matmul GMAC/s. Writes eval/bench/results/serving_bench.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import httpx

from eval.bench.bulk_bench import encoder_macs, rate
from eval.bench.common import machine, machine_line, server_stack, write_results
from eval.bench.http_bench import DEEP_QUEUE, cpu_seconds, load, local_server, rss_mb
from eval.bench.wrk_load import wrk_available, wrk_load
from triage_model.escalation import default_scorer
from triage_model.labeled_data import load_labeled
from triage_model.pipeline import triage_texts
from triage_model.predictor import TriagePredictor

TARGETS = {
    "bulk_per_s": "≥ 100/s on AVX2 (≥ 70 % of limit)",
    "single_p50_ms": "≤ 15 ms",
    "c32_share_of_bulk": "≥ 90 %",
    "c32_p99_ms": "≤ 500 ms",
    "rss_mb": "≤ 500 MB",
}


def bulk_figures(model_dir: Path, texts: list[str], threads: int, seconds: float, gmacs: float) -> dict:
    """In-process bulk rate of the whole predict path, and the encoder's share of the matmul limit."""
    predictor = TriagePredictor.from_pretrained(model_dir, intra_op_threads=threads)
    scorer = default_scorer()
    macs = encoder_macs(predictor, texts)
    model_rate = rate(lambda: predictor.predict(texts, batch_size=32), len(texts), seconds)
    full_rate = rate(lambda: triage_texts(predictor, scorer, texts, batch_size=32), len(texts), seconds)
    figures = {
        "version": predictor.version,
        "onnx_file": predictor.meta.onnx_file,
        "ngram_blend": predictor.ngram is not None,
        "encoder_mmacs_per_text": round(macs / 1e6, 1),
        "model_per_s": round(model_rate, 1),
        "bulk_per_s": round(full_rate, 1),
        "share_of_matmul_limit": round(macs * model_rate / (gmacs * 1e9), 3),
    }
    return figures  # the predictor and its session go with this frame, before the server starts


def wrk_figures(base: str, pid: int, texts: list[str], seconds: float) -> dict:
    """32 wrk connections for ``seconds``, and the server's CPU time per complaint over the same run."""
    if not wrk_available() or seconds <= 0:
        return {}
    before = cpu_seconds(pid)
    run = wrk_load(base, 32, seconds, texts)
    spent = cpu_seconds(pid) - before
    return {
        "wrk32_per_s": run["complaints_per_s"],
        "wrk32_p50_ms": run["p50"],
        "wrk32_p99_ms": run["p99"],
        "wrk32_errors": run["error_rate"],
        "wrk32_requests": run["requests"],
        "wrk32_server_cpu_ms": round(1000 * spent / max(run["requests"], 1), 2),
    }


def http_figures(
    model_dir: Path, texts: list[str], single: int, concurrent: int, mixed: int, wrk_seconds: float, runs: int | str = "auto"
) -> dict:
    """The HTTP figures of one server; ``runs``: TRIAGE_BATCH_CONCURRENT_RUNS (the figures carry what it resolved to)."""
    with local_server(model_dir, DEEP_QUEUE | {"TRIAGE_BATCH_CONCURRENT_RUNS": str(runs)}) as (base, pid):
        runs = httpx.get(f"{base}/v1/model", timeout=10).json()["concurrent_runs"]
        asyncio.run(load(base, 1, 20, texts=texts))  # warm-up
        one = asyncio.run(load(base, 1, single, texts=texts))
        c32 = asyncio.run(load(base, 32, concurrent, texts=texts))
        wrk = wrk_figures(base, pid, texts, wrk_seconds)
        asyncio.run(load(base, 8, mixed))
        return {
            **wrk,
            "concurrent_runs": runs,
            "single_p50_ms": one["p50"],
            "single_p99_ms": one["p99"],
            "c32_per_s": c32["complaints_per_s"],
            "c32_p50_ms": c32["p50"],
            "c32_p99_ms": c32["p99"],
            "errors": one["error_rate"] + c32["error_rate"],
            "requests": 20 + single + concurrent + mixed + wrk.get("wrk32_requests", 0),
            "rss_mb": rss_mb(pid),
        }


def formatted(r: dict) -> dict[str, str]:
    """One model's cells of the table."""
    return {
        "file": r["onnx_file"] + (" + n-gram" if r["ngram_blend"] else ""),
        "macs": str(r["encoder_mmacs_per_text"]),
        "model": str(r["model_per_s"]),
        "bulk": str(r["bulk_per_s"]),
        "share": f"{r['share_of_matmul_limit']:.0%}",
        "single": f"{r['single_p50_ms']} / {r['single_p99_ms']}",
        "c32": str(r["c32_per_s"]),
        "c32_share": f"{r['c32_per_s'] / r['bulk_per_s']:.0%}",
        "c32_lat": f"{r['c32_p50_ms']} / {r['c32_p99_ms']}",
        "rss": str(r["rss_mb"]),
        "version": r["version"],
        "runs": str(r["concurrent_runs"]),
        "wrk32": str(r.get("wrk32_per_s", "–")),
        "wrk32_share": f"{r['wrk32_per_s'] / r['bulk_per_s']:.0%}" if "wrk32_per_s" in r else "–",
        "wrk32_lat": f"{r['wrk32_p50_ms']} / {r['wrk32_p99_ms']}" if "wrk32_per_s" in r else "–",
        "wrk32_cpu": str(r.get("wrk32_server_cpu_ms", "–")),
    }


def table(info: dict, labels: list[str], rows: list[dict]) -> str:
    cells = [formatted(r) for r in rows]
    spec = [
        ("ONNX file (+ n-gram blend)", "file", ""),
        ("encoder MMAC per complaint", "macs", "≤ 1/3 of the shipped"),
        ("bulk: model complaints/s", "model", ""),
        ("bulk: `triage predict` complaints/s", "bulk", TARGETS["bulk_per_s"]),
        ("bulk: share of fp32 matmul limit", "share", "≥ 70 %"),
        ("server: concurrent onnxruntime runs (threads = cores // runs)", "runs", ""),
        ("HTTP 1 client: p50 / p99 ms", "single", f"p50 {TARGETS['single_p50_ms']}"),
        ("HTTP 32 clients: complaints/s", "c32", ""),
        ("HTTP 32 clients: share of bulk", "c32_share", TARGETS["c32_share_of_bulk"]),
        ("HTTP 32 clients: p50 / p99 ms", "c32_lat", f"p99 {TARGETS['c32_p99_ms']}"),
        ("HTTP 32 wrk connections (C client): complaints/s", "wrk32", ""),
        ("HTTP 32 wrk connections: share of bulk", "wrk32_share", TARGETS["c32_share_of_bulk"]),
        ("HTTP 32 wrk connections: p50 / p99 ms", "wrk32_lat", f"p99 {TARGETS['c32_p99_ms']}"),
        ("server CPU-ms per complaint under 32 wrk connections", "wrk32_cpu", ""),
        (f"server RSS after {rows[0]['requests']} requests, MB", "rss", TARGETS["rss_mb"]),
        ("model version", "version", ""),
    ]
    header = [f"| figure | {' | '.join(labels)} | target |", f"|---|{'---|' * len(labels)}---|"]
    lines = [f"{machine_line(info)} · server {server_stack()}", "", *header]
    lines += [f"| {name} | {' | '.join(c[key] for c in cells)} | {target} |" for name, key, target in spec]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", required=True, help="exported model directory (repeat)")
    parser.add_argument("--label", action="append", default=None, help="column name per --model (default: the dir name)")
    parser.add_argument("--data-dir", type=Path, default=Path("labeled_data"))
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads for the bulk figures")
    parser.add_argument("--seconds", type=float, default=5.0, help="minimum timing per bulk figure")
    parser.add_argument("--limit", type=int, default=500, help="test-split texts used")
    parser.add_argument("--single", type=int, default=200, help="one-at-a-time requests")
    parser.add_argument("--concurrent", type=int, default=640, help="requests shared by the 32 clients")
    parser.add_argument("--mixed", type=int, default=200, help="mixed-length requests before reading RSS")
    parser.add_argument(
        "--concurrent-runs", action="append", default=None, help="TRIAGE_BATCH_CONCURRENT_RUNS per --model: a number or auto (the default)"
    )
    parser.add_argument("--wrk-seconds", type=float, default=8.0, help="32 wrk connections this long (0 or no wrk binary: skipped)")
    args = parser.parse_args()
    labels = args.label or [m.name for m in args.model]
    if len(labels) != len(args.model):
        parser.error("give one --label per --model, or none")
    runs = args.concurrent_runs or ["auto"] * len(args.model)
    if len(runs) != len(args.model):
        parser.error("give one --concurrent-runs per --model, or none")

    texts = [r.text for r in load_labeled(args.data_dir).split("test")][: args.limit]
    info = machine()
    rows = []
    for label, model_dir, n_runs in zip(labels, args.model, runs, strict=True):
        row = {"label": label, **bulk_figures(model_dir, texts, args.threads, args.seconds, float(info["fp32_matmul_gmacs"]))}
        row |= http_figures(model_dir, texts, args.single, args.concurrent, args.mixed, args.wrk_seconds, n_runs)
        rows.append(row)
        print(row, flush=True)
    text = table(info, labels, rows)
    path = write_results("serving_bench", {"machine": info, "rows": rows}, text)
    print(text)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
