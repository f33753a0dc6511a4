"""Throughput of ``triage predict``: the local engine beside the Ray engine with 1 and 2 local workers.

Why here and not in ``eval/bench``: the Ray engine lives on the roof (``triage_cli``), which ``eval`` may
not import. Each variant scores the same file in one run, so the ratios between them hold on any CPU;
the absolute rows/s hold only on the CPU printed with them (``eval.bench.common.machine_line``).

    python -m triage_cli.ray_bench --input runs/testsplit.jsonl          # default: the labeled test split

Ray start-up (``ray.init``) is timed apart; each Ray figure includes actor start-up and model loading,
as a real run does. On a shared machine other processes' load moves the figures: run it on an idle one.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from eval.bench.common import machine, machine_line, write_results
from triage_cli.ray_engine import RayRunConfig, predict_with_ray
from triage_model.batch import predict_file
from triage_model.labeled_data import load_labeled


def write_test_split(path: Path, data_dir: Path = Path("labeled_data")) -> int:
    """The labeled test split as a predict input (id, text, a fixed received_at); returns the row count."""
    rows = load_labeled(data_dir).split("test")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({"id": r.id, "text": r.text, "received_at": "2026-12-01T08:00:00+08:00"}, ensure_ascii=False) + "\n")
    return len(rows)


def run(input_path: Path, workers: tuple[int, ...] = (1, 2)) -> dict[str, object]:
    """Seconds and rows/s per variant: local (onnxruntime on every core) and Ray with N one-thread actors."""
    import ray

    n = sum(1 for _ in input_path.open(encoding="utf-8"))
    results: dict[str, object] = {"rows": n, "machine": machine(), "variants": []}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        predict_file(input_path, Path(tmp) / "local.jsonl")
        local_s = time.perf_counter() - t0
        results["variants"].append({"engine": "local", "workers": 1, "threads": os.cpu_count(), "seconds": round(local_s, 1)})
        t0 = time.perf_counter()
        ray.init(num_cpus=max(workers) + 1, include_dashboard=False, log_to_driver=False)
        results["ray_init_s"] = round(time.perf_counter() - t0, 1)
        try:
            for w in workers:
                t0 = time.perf_counter()
                predict_with_ray(RayRunConfig(input_path, Path(tmp) / f"ray-{w}", workers=w, cpus_per_worker=1, progress=False))
                seconds = time.perf_counter() - t0
                results["variants"].append({"engine": "ray", "workers": w, "threads": 1, "seconds": round(seconds, 1)})
        finally:
            ray.shutdown()
    for v in results["variants"]:
        v["rows_per_s"] = round(n / v["seconds"], 1)
    return results


def table(results: dict) -> str:
    lines = [
        f"`triage predict` on {results['rows']} rows; Ray start-up {results['ray_init_s']} s not included",
        "",
        machine_line(results["machine"]),
        "",
        "| engine | workers × threads | seconds | rows/s |",
        "|---|---|---|---|",
    ]
    for v in results["variants"]:
        lines.append(f"| {v['engine']} | {v['workers']} × {v['threads']} | {v['seconds']} | {v['rows_per_s']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=None, help="JSONL to score (default: the labeled test split)")
    args = parser.parse_args()
    input_path = args.input
    if input_path is None:
        input_path = Path("runs/ray-bench/testsplit.jsonl")
        write_test_split(input_path)
    results = run(input_path)
    text = table(results)
    print(text)
    print(f"written to {write_results('ray_bench', results, text)}")


if __name__ == "__main__":
    main()
