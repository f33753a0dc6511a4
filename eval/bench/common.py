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


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_isa() -> str:
    """The widest SIMD the int8/fp32 kernels can use: AVX-512-VNNI, AVX-512, AVX2 or older."""
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return "unknown"
    if "avx512_vnni" in flags:
        return "AVX-512-VNNI"
    if "avx512f" in flags:
        return "AVX-512"
    if "avx2" in flags:
        return "AVX2"
    return "pre-AVX2"


def matmul_gmacs(n: int = 2048, seconds: float = 1.0) -> float:
    """The machine's fp32 matmul speed (GMAC/s) on an n×n product: the ceiling every timing is read against."""
    import time

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up
    runs, start = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return round(runs * n**3 / (time.perf_counter() - start) / 1e9, 1)


def machine() -> dict[str, object]:
    """CPU model, ISA, core count and fp32 matmul GMAC/s: printed beside every figure, since a timing
    measured on one CPU is not a fact about another."""
    import os

    return {
        "cpu": cpu_model(),
        "isa": cpu_isa(),
        "cpu_count": os.cpu_count(),
        "fp32_matmul_gmacs": matmul_gmacs(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def machine_line(info: dict[str, object]) -> str:
    return f"CPU: {info['cpu']} · {info['isa']} · {info['cpu_count']} cores · fp32 matmul {info['fp32_matmul_gmacs']} GMAC/s"


def server_stack() -> str:
    """The event loop and HTTP parser uvicorn picks (``--loop auto --http auto``): uvloop + httptools when they are
    installed (both C), else asyncio + h11 (pure Python, more CPU per request). Printed with the HTTP figures,
    since a server on the other stack is not the same server."""
    from importlib.util import find_spec

    return f"{'uvloop' if find_spec('uvloop') else 'asyncio'} + {'httptools' if find_spec('httptools') else 'h11'}"


def uvicorn_command(host: str, port: int) -> list[str]:
    """The API as a separate server process, as it runs in production (``serving.app:create_app`` factory)."""
    import sys

    return [
        sys.executable,
        "-m",
        "uvicorn",
        "serving.app:create_app",
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]


def write_results(name: str, results: dict, table: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(table + "\n", encoding="utf-8")
    return path
