"""Prometheus metrics and structured JSON logs (never the complaint text: privacy).

Several worker processes (``triage serve --workers N``): prometheus_client's multiprocess mode. The CLI
points ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory before the workers start (``serving.workers``);
every process then
keeps its values in memory-mapped files there, and ``/metrics`` (whichever worker answers) merges the
files of all of them (:func:`metrics_registry`): counters and histograms are summed over the workers,
dead ones included; the gauges below say how (``multiprocess_mode``: ``livesum`` adds the live
workers, ``liveall`` keeps one series per live worker with a ``pid`` label). ``Info`` metrics do not
work in that mode, so ``triage_worker_model`` carries the served version as a gauge too. Without the
variable everything is per process, as before.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info, multiprocess

from serving.workers import MULTIPROC_ENV

REQUEST_LATENCY = Histogram(
    "triage_request_latency_seconds",
    "HTTP request latency by route",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IN_FLIGHT = Gauge("triage_requests_in_flight", "HTTP requests being handled", multiprocess_mode="livesum")
QUEUED = Gauge("triage_inference_queue_depth", "requests waiting for an inference slot", multiprocess_mode="livesum")
SHED = Counter("triage_shed_total", "requests not computed: queue full (429), queue deadline (503), client gone while queued", ["reason"])
BATCH_TEXTS = Histogram(
    "triage_batch_texts",
    "texts per shared batch (dynamic batching; a batch runs as a few length groups)",
    buckets=(1, 2, 4, 8, 12, 16, 24, 32, 48, 64),
)
BATCH_SECONDS = Histogram(
    "triage_batch_seconds",
    "seconds per shared batch (dynamic batching)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ALERT_STORE_ERRORS = Counter(
    "triage_alert_store_errors_total", "volume-alert store failures (e.g. Redis unreachable); predictions still served"
)
PREDICTIONS = Counter("triage_predictions_total", "predictions served per head and label", ["head", "label"])
ERRORS = Counter("triage_errors_total", "error responses by type", ["error_type"])
MODEL_INFO = Info("triage_model", "the model being served")
WORKER_MODEL = Gauge(
    "triage_worker_model",
    "1 for the model version this process serves (with several workers: one series per live worker, label pid)",
    ["model_version"],
    multiprocess_mode="liveall",
)
RELOADS = Counter("triage_model_reloads_total", "model reload attempts", ["outcome"])
# Per-category volume is PREDICTIONS{head="category"}; these add the escalation and alert side.
ESCALATION_TIERS = Counter("triage_escalation_tier_total", "escalation decisions by tier", ["tier"])
ESCALATION_TRIGGERS = Counter("triage_escalation_triggers_total", "escalation triggers fired", ["trigger"])
VOLUME_ALERT_ACTIVE = Gauge(
    "triage_volume_alert_active", "1 while a category's volume alert is active", ["category"], multiprocess_mode="livemax"
)
VOLUME_ALERTS_RAISED = Counter("triage_volume_alerts_total", "volume alerts raised (inactive → active)", ["category"])


def multiproc_dir() -> Path | None:
    """The shared metrics directory of a multi-worker server (``PROMETHEUS_MULTIPROC_DIR``), or None."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def metrics_registry() -> CollectorRegistry:
    """What ``/metrics`` exports: every worker's values merged when ``PROMETHEUS_MULTIPROC_DIR`` is set
    (a fresh registry per scrape, as prometheus_client documents), else this process's default registry."""
    if multiproc_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def mark_worker_dead(pid: int | None = None) -> None:
    """A worker that stops drops its live gauges (in-flight, queue depth, served model) from the merge;
    its counters and histograms stay counted. No-op without multiprocess mode."""
    if multiproc_dir() is not None:
        multiprocess.mark_process_dead(os.getpid() if pid is None else pid)


def publish_served_version(version: str, previous: str | None = None) -> None:
    if previous is not None and previous != version:
        WORKER_MODEL.labels(model_version=previous).set(0)  # multiprocess mode cannot remove a series: it stays at 0
        if multiproc_dir() is None:
            WORKER_MODEL.remove(previous)
    WORKER_MODEL.labels(model_version=version).set(1)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: easy for log shippers, and no free text that could hold a complaint."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("request_id", "route", "status", "latency_ms", "model_version", "key_id"):
            if hasattr(record, key):
                payload[key] = getattr(record, key)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    for name in ("serving", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # our access log carries the request id instead
