"""Shared helpers for benchmarks: sample texts of a given length and result tables."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"

_SEED_TEXT = (
    "我上周在你们平台买的空气净化器到货就坏了，开机没两分钟就有焦糊味，申请售后说要等七个工作日，"
    "客服一直让我等通知，已经打了三次电话都没人处理，订单号是2026112900187，金额1299元，"
    "如果这周还不给退款我就去12315投诉，顺便把经过发到微博上让大家评评理。"
)


def text_of_length(n: int, seed: int = 0) -> str:
    """A realistic complaint-like text of exactly ``n`` characters (rotating through the seed text)."""
    start = seed % len(_SEED_TEXT)
    rotated = _SEED_TEXT[start:] + _SEED_TEXT[:start]
    return (rotated * (n // len(rotated) + 1))[:n]


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    arr = np.asarray(samples_ms)
    return {f"p{p}": round(float(np.percentile(arr, p)), 2) for p in (50, 95, 99)}


def machine() -> dict[str, object]:
    import os

    return {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()}


def write_results(name: str, results: dict, table: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(table + "\n", encoding="utf-8")
    return path
