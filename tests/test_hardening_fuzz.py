"""Issue 14, "done means": a random fuzzer of 10,000+ mixed requests against a real server (uvicorn,
h11, TCP) gets 0 answers ≥ 500 and 0 dropped connections, and every error has the one JSON shape.

Mixed: valid singles and batches (with ids and context), broken and non-UTF-8 JSON, deep nesting,
wrong types, lone surrogates, absurd dates, oversized texts and bodies, odd media types, random and
non-ASCII X-API-Key / X-Request-ID header bytes, unknown paths and methods, feedback and admin calls
with hostile paths. Seeded: a failure names the request that caused it and reproduces.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter

import httpx
import pytest

from tests.test_hardening_live import start_server

N_REQUESTS = 10_400
THREADS = 4
KEYS = {"triage": "triage-key", "feedback": "fb-key", "admin": "admin-key"}
TEXTS = [
    "快递三天没更新，客服也不回",
    "我的银行卡被盗刷了五千块，再不处理我就报警并且去12315投诉！",
    "東西很好用，謝謝客服的耐心解答 👍",
    "The parcel never arrived.",
    "叫你们经理出来！这已经是我第四次打电话了",
    "朋友说要报警" * 300,
    "1" * 3000,
    "客服：您好 客户：我要投诉",
    "\u3000\u200b好",
    "退款" + "，" * 500 + "没到",
]


def rand_text(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.7:
        return rng.choice(TEXTS)
    if pick < 0.9:
        return "".join(
            chr(rng.choice([rng.randint(0x20, 0x7E), rng.randint(0x4E00, 0x9FFF), rng.randint(0x3000, 0x303F)]))
            for _ in range(rng.randint(1, 80))
        )
    return "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(1, 40)))


def junk(rng: random.Random) -> object:
    return rng.choice(
        [None, 0, -1, 1e308, "", " ", [], {}, [1, 2], {"a": 1}, True, "L9", "9999-12-31T23:59:59+00:00", "2026-13-45", "x" * 300]
    )


def context(rng: random.Random) -> dict:
    fields = {
        "received_at": lambda: rng.choice(
            [
                "2027-02-04T10:00:00+08:00",
                "2026-11-29T07:30:00Z",
                "9999-12-31T23:59:59+00:00",
                "2026-01-01T00:00:00",
                "1969-12-31T23:59:59Z",
            ]
        ),
        "tier_entered_at": lambda: rng.choice(["2026-11-27T09:00:00+08:00", "0001-01-01T00:00:00+14:00", "2199-12-31T23:59:59+08:00"]),
        "repeat_count": lambda: rng.choice([0, 3, 10_000, 10_001, -1, "3"]),
        "current_tier": lambda: rng.choice(["L1", "L2", "L3", "L4", "L5", ""]),
        "customer_requested_escalation": lambda: rng.choice([True, False, "yes", None]),
    }
    return {k: make() for k, make in fields.items() if rng.random() < 0.3}


def build(rng: random.Random) -> tuple[str, str, dict[str, bytes], bytes]:
    """One random request: (method, path, headers, body)."""
    headers: dict[str, bytes] = {"content-type": b"application/json"}
    kind = rng.random()
    path, method = "/v1/triage", "POST"
    if kind < 0.25:
        body = json.dumps({"text": rand_text(rng), **context(rng)})
    elif kind < 0.32:
        items = [
            {"text": rand_text(rng), **({"id": f"T-{i}"} if rng.random() < 0.5 else {}), **context(rng)} for i in range(rng.randint(1, 6))
        ]
        path, body = "/v1/triage/batch", json.dumps({"items": items})
    elif kind < 0.40:
        path = rng.choice(["/v1/triage", "/v1/triage/batch"])
        body = json.dumps(
            rng.choice([{"text": junk(rng)}, {"items": junk(rng)}, {"items": [junk(rng)]}, {"text": "好", "extra": 1}, junk(rng)])
        )
    elif kind < 0.46:
        body = json.dumps({"text": "快递没到" + chr(rng.randint(0xD800, 0xDFFF))})  # ASCII JSON: a lone surrogate escape
    elif kind < 0.52:
        raw = json.dumps({"text": rand_text(rng)}, ensure_ascii=False)
        return (
            method,
            path,
            headers,
            rng.choice(
                [
                    raw[: rng.randint(0, len(raw))].encode(),
                    raw.encode("utf-16"),
                    raw.encode("gbk", "ignore"),
                    b"\x00" + raw.encode(),
                    bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 200))),
                ]
            ),
        )
    elif kind < 0.55:
        depth = rng.choice([100, 1000, 100_000])
        body = "[" * depth + "]" * depth
    elif kind < 0.58:
        body = json.dumps({"text": "字" * rng.choice([100_001, 250_000])})
    elif kind < 0.585:
        body = " " * (2 * 1024 * 1024 + 10)
    elif kind < 0.64:
        headers["content-type"] = rng.choice(
            [b"application/evil+json", b"text/plain", b"", b"application/json; charset=utf-16", b"multipart/form-data"]
        )
        body = json.dumps({"text": rand_text(rng)})
    elif kind < 0.72:
        path = "/v1/feedback"
        body = json.dumps(
            rng.choice(
                [
                    {"text": rand_text(rng), "severity": rng.choice(["一级", "四级", None])},
                    {"request_id": "r" * rng.randint(0, 200), "category": "物流配送", "reviewer": junk(rng)},
                    {"text": "x" * 30_000, "sentiment": "愤怒"},
                    junk(rng),
                ]
            )
        )
        headers["x-api-key"] = rng.choice([KEYS["feedback"], KEYS["triage"]]).encode()
    elif kind < 0.78:
        path = "/v1/admin/reload"
        body = json.dumps({"model_dir": rng.choice(["../../etc", "/etc/passwd", "x" * 2000, "~", "candidate", "\u0000", junk(rng)])})
        headers["x-api-key"] = rng.choice([KEYS["admin"], KEYS["triage"], "\xe9".encode("latin-1").decode("latin-1")]).encode("latin-1")
    elif kind < 0.88:
        method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
        path = rng.choice(
            [
                "/healthz",
                "/readyz",
                "/v1/model",
                "/v1/alerts",
                "/metrics",
                "/v1/triage",
                "/nope",
                "/v1/../etc",
                "/%ff%fe",
                "/v1/triage?x=" + "a" * 500,
            ]
        )
        body = "" if method in ("GET", "HEAD", "OPTIONS", "DELETE") else json.dumps({"text": "好"})
    else:
        path = rng.choice(["/v1/triage", "/healthz"])
        method = "POST" if path == "/v1/triage" else "GET"
        body = json.dumps({"text": rand_text(rng)}) if method == "POST" else ""
    if "x-api-key" not in headers and rng.random() < 0.9:
        headers["x-api-key"] = KEYS["triage"].encode()
    if rng.random() < 0.08:
        key = bytes(rng.choice([0x20, 0x41, 0x7E, 0x80, 0xE9, 0xFF, 0x09]) for _ in range(rng.randint(1, 40)))
        headers["x-api-key"] = key.strip(b" \t") or b"\xe9"  # a header value cannot begin or end in whitespace on the wire
    if rng.random() < 0.15:
        rid = bytes(rng.choice([0x20, 0x09, 0x41, 0x61, 0x2D, 0xE9, 0x7E]) for _ in range(rng.randint(1, 300)))
        headers["x-request-id"] = rid.strip(b" \t") or b"x"  # a header value cannot begin or end in whitespace on the wire
    return method, path, headers, body.encode() if isinstance(body, str) else body


@pytest.mark.slow
def test_ten_thousand_fuzzed_requests_get_no_5xx_and_no_dropped_connection(served_model_dir, tmp_path):
    base, proc = start_server(
        served_model_dir,
        TRIAGE_API_KEYS=KEYS["triage"],
        TRIAGE_FEEDBACK_KEYS=f"qa:{KEYS['feedback']}",
        TRIAGE_ADMIN_KEYS=f"ops:{KEYS['admin']}",
        TRIAGE_CORRECTIONS_DIR=str(tmp_path / "corrections"),
        TRIAGE_FEEDBACK_PER_MINUTE="100000",
        TRIAGE_FEEDBACK_BURST="100000",
        TRIAGE_QUEUE_TIMEOUT_MS="60000",
    )
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def run(worker: int) -> None:
        rng = random.Random(1400 + worker)
        with httpx.Client(base_url=base, timeout=120) as client:
            for i in range(N_REQUESTS // THREADS):
                method, path, headers, body = build(rng)
                where = f"worker {worker} request {i}: {method} {path} {dict(headers)!r:.200} {body[:120]!r}"
                try:
                    resp = client.request(method, path, headers=headers, content=body or None)
                except httpx.HTTPError as err:
                    with lock:
                        failures.append(f"dropped ({type(err).__name__}) at {where}")
                    continue
                with lock:
                    statuses[resp.status_code] += 1
                    if resp.status_code >= 500:
                        failures.append(f"{resp.status_code} {resp.text[:200]} at {where}")
                    elif resp.status_code >= 400 and method != "HEAD":
                        shape = resp.json()
                        if not {"error", "error_type", "request_id"} <= set(shape):
                            failures.append(f"{resp.status_code} without the error shape at {where}")

    try:
        threads = [threading.Thread(target=run, args=(w,)) for w in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
        assert proc.poll() is None, "the server died"
    finally:
        proc.terminate()
        proc.wait(30)
    total = sum(statuses.values()) + sum("dropped" in f for f in failures)
    print(f"fuzzer: {total} requests, statuses {dict(sorted(statuses.items()))}")
    assert total >= 10_000
    assert not failures, f"{len(failures)} failures of {total}, first: {failures[:5]}"
    assert statuses[200] > 2_000 and statuses[422] > 500 and statuses[413] > 50 and statuses[415] > 100, statuses


def test_the_fuzzer_builds_every_kind_of_request():
    """The fast tier checks the generator itself (every branch reached, headers are sendable)."""
    rng = random.Random(0)
    seen = Counter()
    for _ in range(2000):
        method, path, headers, _ = build(rng)
        seen[(method == "POST", path.split("?")[0])] += 1
        for value in headers.values():
            assert value == value.strip(b" \t") and b"\r" not in value and b"\n" not in value
    assert {p for _, p in seen} >= {"/v1/triage", "/v1/triage/batch", "/v1/feedback", "/v1/admin/reload", "/healthz", "/nope"}
