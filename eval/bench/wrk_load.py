"""Closed-loop HTTP load from ``wrk`` (a C client, Debian package ``wrk``), for benchmarks on a small machine.

Why beside the Python client of ``http_bench.load``: on 2 cores the client shares the CPU with the
server, and httpx spends about as much CPU per request as the service's own request handling, so at a
few hundred complaints/s the Python client measures itself. wrk costs a few microseconds per request,
so what it reports is the server. Both are kept: httpx is what a Python intake system looks like,
wrk is the server's capacity. The request bodies are real texts, cycled in order, one per request.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

LUA = r"""
local bodies = {}
local i = 0
init = function(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
end
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", args_path, {["Content-Type"] = "application/json"}, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_available() -> bool:
    """Whether the ``wrk`` binary is on PATH (``apt-get install wrk``)."""
    return shutil.which("wrk") is not None


def wrk_load(base: str, clients: int, seconds: float, texts: Sequence[str], path: str = "/v1/triage") -> dict:
    """``clients`` connections sending one text each per ``POST path`` for ``seconds``: complaints/s, p50/p99 ms.

    One wrk thread: it needs a fraction of a core at these rates, and a second thread would take a core
    the server needs.
    """
    if not wrk_available():
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        bodies = Path(tmp) / "bodies.jsonl"
        bodies.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
        script = Path(tmp) / "post.lua"
        script.write_text(f"args_path = {json.dumps(path)}\n" + LUA, encoding="utf-8")
        cmd = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "60s", "-s", str(script), base, "--", str(bodies)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=True).stdout
    match = re.search(r"WRK_JSON (\{.*\})", out)
    if match is None:
        raise RuntimeError(f"wrk printed no summary: {out[-500:]}")
    s = json.loads(match.group(1))
    errors = s["connect"] + s["read"] + s["write"] + s["status"] + s["timeout"]
    return {
        "clients": clients,
        "requests": s["requests"],
        "complaints_per_s": round(s["requests"] / (s["duration_us"] / 1e6), 1),
        "p50": round(s["p50_us"] / 1000, 2),
        "p99": round(s["p99_us"] / 1000, 2),
        "error_rate": round(errors / max(s["requests"], 1), 4),
    }
