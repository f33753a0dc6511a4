"""HTTP load benchmark against a local server (127.0.0.1 only, bounded request count and time).

    python -m eval.bench.http_bench --model triage_model/default_model

Starts ``triage serve`` on a free loopback port, then: single-request latency at 1/8/32 concurrent
clients (p50/p95/p99, throughput, error rate), batch-endpoint throughput (64 items per call), and the
server's RSS. Writes eval/bench/results/http_bench.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from eval.bench.common import machine, machine_line, percentiles, text_of_length, uvicorn_command, write_results

HOST = "127.0.0.1"
# latency under a deep queue, not load shedding (that is eval/bench/load_bench.py): no queue deadline
DEEP_QUEUE = {"TRIAGE_MAX_QUEUE": "256", "TRIAGE_QUEUE_TIMEOUT_MS": "600000"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process ``pid`` has used so far (``/proc/<pid>/stat``), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def local_server(model: Path | None = None, env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """``(base URL, server pid)`` of the API started as its own uvicorn process on a free loopback
    port, ready to answer; stopped on exit. ``env`` adds settings (e.g. ``TRIAGE_MAX_QUEUE``)."""
    port = free_port()
    base = f"http://{HOST}:{port}"
    full_env = {**os.environ, **(env or {}), **({"TRIAGE_MODEL_DIR": str(model)} if model else {})}
    server = subprocess.Popen(uvicorn_command(HOST, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=full_env)
    try:
        asyncio.run(wait_ready(base))
        yield base, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


async def wait_ready(base: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"{base}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)
    raise TimeoutError("server did not become ready")


MIXED_LENGTHS = (20, 60, 100, 200, 400)


def mixed_text(i: int) -> str:
    """The i-th text of the mixed 20–400-character load."""
    return text_of_length(MIXED_LENGTHS[i % len(MIXED_LENGTHS)], i)


async def load(base: str, clients: int, requests: int, batch: int | None = None, texts: list[str] | None = None) -> dict:
    """``requests`` calls shared by ``clients`` workers; each call is one text or a ``batch`` of texts.

    The texts cycle through ``texts`` when given (e.g. real test-split complaints), else the mixed
    20–400-character load of :func:`mixed_text`.
    """
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))

    def text(i: int) -> str:
        return texts[i % len(texts)] if texts else mixed_text(i)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            if batch:
                url, body = (
                    f"{base}/v1/triage/batch",
                    {"items": [{"text": text(i * batch + j)} for j in range(batch)]},
                )
            else:
                url, body = f"{base}/v1/triage", {"text": text(i)}
            start = time.perf_counter()
            try:
                resp = await client.post(url, json=body, timeout=60)
                ok = resp.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append((time.perf_counter() - start) * 1000)
            errors += not ok

    start = time.perf_counter()
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients)) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    elapsed = time.perf_counter() - start
    items = requests * (batch or 1)
    return {
        "clients": clients,
        "requests": requests,
        "batch": batch or 1,
        **percentiles(latencies),
        "requests_per_s": round(requests / elapsed, 1),
        "complaints_per_s": round(items / elapsed, 1),
        "error_rate": round(errors / requests, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="exported model dir (default: shipped model)")
    parser.add_argument("--requests", type=int, default=300, help="single requests per concurrency level")
    parser.add_argument("--batch-requests", type=int, default=30, help="batch calls (64 items each)")
    args = parser.parse_args()

    with local_server(args.model, DEEP_QUEUE) as (base, pid):
        rss_idle = rss_mb(pid)
        rows = []
        for clients in (1, 8, 32):
            rows.append(asyncio.run(load(base, clients, args.requests)))
            print(rows[-1], flush=True)
        rows.append(asyncio.run(load(base, 4, args.batch_requests, batch=64)))
        print(rows[-1], flush=True)
        rss_peak = rss_mb(pid)
    lines = [
        "| clients | batch | requests | p50 ms | p95 ms | p99 ms | req/s | complaints/s | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clients']} | {r['batch']} | {r['requests']} | {r['p50']} | {r['p95']} | {r['p99']} | "
            f"{r['requests_per_s']} | {r['complaints_per_s']} | {r['error_rate']:.2%} |"
        )
    lines.append(f"\nserver RSS: {rss_idle} MB idle, {rss_peak} MB after load")
    info = machine()
    lines.append(machine_line(info))
    table = "\n".join(lines)
    path = write_results("http_bench", {"machine": info, "rows": rows, "rss_mb": {"idle": rss_idle, "after_load": rss_peak}}, table)
    print(table)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
