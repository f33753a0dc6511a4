"""Overload benchmark (issue 14, item 8): goodput, latency and shed share at 8 / 32 / 64 / 128 clients.

    python -m eval.bench.load_bench [--seconds 20] [--clients 8 32 64 128]

Starts the API (uvicorn, default settings: 2 inference slots, queue of 64, 1.5 s queue deadline) on a
free loopback port, then for each client count runs that many closed-loop asyncio clients for
``--seconds``: each posts one complaint (20–400 characters), waits for the answer, posts the next;
after a 429/503 it waits the Retry-After seconds first, as a well-behaved client does.
Alongside, a probe calls /healthz every 100 ms. Recorded per level: goodput (200s per second), p50 /
p99 latency of the 200s, the share of 429 (queue full) and 503 (queue deadline) answers, other
errors, and /healthz p50 / p99. Writes eval/bench/results/load_bench.{json,md} with the CPU it ran on.

Client and server share the machine, so on a small one the figures understate the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from eval.bench.common import machine, machine_line, text_of_length, write_results
from eval.bench.http_bench import local_server

LENGTHS = (20, 60, 100, 200, 400)


def pct(samples: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(samples) * 1000, q)), 1) if samples else None


class RawClient:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: a few microseconds of CPU per request,
    so the load generator does not eat the cores the server needs (httpx costs ~1 ms a request)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, float]:
        """(status, Retry-After seconds or 0). A kept-alive connection the server closed while it sat
        idle (uvicorn's keep-alive timeout is 5 s; a Retry-After can be longer) is reopened once, as
        any HTTP client library does."""
        if self.writer is not None:
            try:
                return await self._send(method, path, body)
            except (OSError, asyncio.IncompleteReadError):
                await self.close()
        return await self._send(method, path, body)

    async def _send(self, method: str, path: str, body: bytes) -> tuple[int, float]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionError("closed")
        length, close, retry_after = 0, False, 0.0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and "close" in value.lower():
                close = True
            elif name.lower() == "retry-after":
                retry_after = float(value)
        await self.reader.readexactly(length)
        if close:
            await self.close()
        return int(status_line.split()[1]), retry_after

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def level(base: str, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    health: list[float] = []
    stop = time.monotonic() + seconds
    host, port = base.removeprefix("http://").split(":")

    async def client_loop(worker: int) -> None:
        conn = RawClient(host, int(port))
        i = worker
        while time.monotonic() < stop:
            body = json.dumps({"text": text_of_length(LENGTHS[i % len(LENGTHS)], i)}, ensure_ascii=False).encode()
            start = time.perf_counter()
            try:
                status, retry_after = await conn.request("POST", "/v1/triage", body)
                statuses[status] += 1
                if status == 200:
                    latencies.append(time.perf_counter() - start)
                elif retry_after:  # a well-behaved client backs off as told
                    await asyncio.sleep(min(retry_after, max(0.0, stop - time.monotonic())))
            except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                statuses[0] += 1
                errors[type(err).__name__] += 1
                await conn.close()
            i += clients
        await conn.close()

    async def probe() -> None:
        conn = RawClient(host, int(port))
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                await conn.request("GET", "/healthz")
                health.append(time.perf_counter() - start)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                health.append(10.0)
                await conn.close()
            await asyncio.sleep(0.1)
        await conn.close()

    began = time.perf_counter()
    await asyncio.gather(probe(), *(client_loop(w) for w in range(clients)))
    elapsed = time.perf_counter() - began
    total = sum(statuses.values())
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": total,
        "goodput_per_s": round(statuses[200] / elapsed, 1),
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "share_429": round(statuses[429] / total, 3) if total else 0.0,
        "share_503": round(statuses[503] / total, 3) if total else 0.0,
        "other_errors": total - statuses[200] - statuses[429] - statuses[503],
        "healthz_p50_ms": pct(health, 50),
        "healthz_p99_ms": pct(health, 99),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "client_errors": dict(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="exported model dir (default: shipped model)")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each level")
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32, 64, 128])
    args = parser.parse_args()

    with local_server(args.model) as (base, _pid):
        settings = httpx.get(f"{base}/readyz").json()
        rows = []
        for clients in args.clients:
            rows.append(asyncio.run(level(base, clients, args.seconds)))
            print(rows[-1], flush=True)
    info = machine()
    lines = [
        f"Closed-loop clients for {args.seconds:g} s each, one complaint (20–400 chars) per request; default limits "
        "(2 inference slots, queue 64, 1.5 s queue deadline); client and server on the same machine.",
        machine_line(info),
        "",
        "| clients | goodput (200/s) | p50 ms (200s) | p99 ms (200s) | 429 share | 503 share | other errors "
        "| /healthz p50 ms | /healthz p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clients']} | {r['goodput_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['share_429']:.1%} | {r['share_503']:.1%} | "
            f"{r['other_errors']} | {r['healthz_p50_ms']} | {r['healthz_p99_ms']} |"
        )
    table = "\n".join(lines)
    path = write_results("load_bench", {"machine": info, "model_version": settings.get("model_version"), "rows": rows}, table)
    print(table)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
