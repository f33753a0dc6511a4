"""Volume alerts (预警): a category suddenly getting many more complaints than it usually does.

Why: a spike in one category (支付与资金安全 after a payment outage, 物流配送 after a warehouse fire)
is usually one systemic incident behind many tickets, which belongs with management (L4) as one
problem, not with front-line agents as hundreds.

How: every served prediction adds one to its category's bucket (``bucket_s`` wide, 60 s by default).
For each category:

* ``window_count``  = predictions in the last ``window_s`` (15 min by default);
* ``baseline_rate`` = predictions per second over the ``baseline_s`` (24 h) before that window;
* ``expected``      = ``baseline_rate × window_s``.

A category is alerting while ``window_count ≥ min_count`` **and** ``window_count > ratio × expected``
(``ratio`` = 3 by default). The minimum count stops a quiet category from alerting on 3 complaints
against an expected 0.5. The baseline is measured over the history actually seen, and nothing alerts
until ``min_history_s`` of history exists (a fresh process knows no "usual" volume yet).

Time is injectable (``clock``), so tests drive the monitor with a fake clock. All methods are
thread-safe (one lock; the work under it is a few dictionary operations).

Scaling out: this state is per process, so with ``triage serve --workers N`` each worker sees about
1/N of the traffic and alerts on its own share. To share it, keep the buckets in Redis instead of the
dictionary: ``INCR vol:{category}:{bucket_index}`` plus ``EXPIRE`` of ``baseline_s + window_s`` on
every prediction (one pipelined round trip), and sum the window/baseline buckets with one ``MGET`` when
evaluating; keep ``active_since`` with ``SET alert:{category} <ts> NX EX <window_s>``. The arithmetic
below stays the same; only ``_add`` and ``_counts`` change.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from serving.observability import VOLUME_ALERT_ACTIVE, VOLUME_ALERTS_RAISED


class CategoryVolume(BaseModel):
    """The numbers behind one category's alert decision."""

    category: str
    window_count: int = Field(description="predictions in the last window")
    baseline_count: int = Field(description="predictions in the baseline period before the window")
    baseline_seconds: float = Field(description="length of baseline history actually seen (≤ baseline_s)")
    expected_in_window: float = Field(description="baseline rate scaled to the window length")
    ratio: float | None = Field(description="window_count / expected_in_window (null when nothing was expected)")
    alerting: bool
    active_since: datetime | None = None


class AlertsSnapshot(BaseModel):
    generated_at: datetime
    window_seconds: int
    baseline_seconds: int
    ratio_threshold: float
    min_count: int
    warming_up: bool = Field(description="less than min_history_s of history: no alerts yet")
    alerts: list[CategoryVolume] = Field(description="categories alerting now, largest ratio first")
    categories: list[CategoryVolume] = Field(description="every category seen in the baseline or window")


class VolumeMonitor:
    """Rolling per-category counts with spike detection; see the module docstring."""

    def __init__(
        self,
        window_s: int = 900,
        baseline_s: int = 86_400,
        ratio: float = 3.0,
        min_count: int = 20,
        bucket_s: int = 60,
        min_history_s: int = 3_600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < bucket_s <= window_s < baseline_s:
            raise ValueError("need 0 < bucket_s <= window_s < baseline_s")
        self.window_s = window_s
        self.baseline_s = baseline_s
        self.ratio = ratio
        self.min_count = min_count
        self.bucket_s = bucket_s
        self.min_history_s = min_history_s
        self.clock = clock
        self.started_at = clock()
        self._buckets: dict[int, Counter[str]] = {}
        self._active: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- state (swap these two for Redis to share across workers) ---------------------------------

    def _add(self, category: str, n: int, now: float) -> None:
        self._buckets.setdefault(int(now // self.bucket_s), Counter())[category] += n
        oldest = int((now - self.baseline_s - self.window_s) // self.bucket_s)
        for idx in [i for i in self._buckets if i < oldest]:
            del self._buckets[idx]

    def _counts(self, now: float) -> tuple[Counter[str], Counter[str]]:
        """(window counts, baseline counts) by category at ``now``: the window is the last
        ``window_s / bucket_s`` buckets (the current one included), the baseline the buckets before."""
        current = int(now // self.bucket_s)
        window_first = current - self.window_s // self.bucket_s + 1
        baseline_first = window_first - self.baseline_s // self.bucket_s
        window, baseline = Counter(), Counter()
        for idx, counts in self._buckets.items():
            if window_first <= idx <= current:
                window.update(counts)
            elif baseline_first <= idx < window_first:
                baseline.update(counts)
        return window, baseline

    # -- decisions --------------------------------------------------------------------------------

    def _evaluate(self, category: str, window: int, baseline: int, now: float) -> CategoryVolume:
        history = now - self.started_at
        span = max(0.0, min(self.baseline_s, history - self.window_s))
        expected = baseline / span * self.window_s if span > 0 else 0.0
        ratio = window / expected if expected > 0 else None
        alerting = (
            history >= self.min_history_s and span > 0 and window >= self.min_count and (expected == 0 or window > self.ratio * expected)
        )
        if alerting and category not in self._active:
            self._active[category] = now
            VOLUME_ALERTS_RAISED.labels(category=category).inc()
        elif not alerting:
            self._active.pop(category, None)
        VOLUME_ALERT_ACTIVE.labels(category=category).set(1 if alerting else 0)
        since = self._active.get(category)
        return CategoryVolume(
            category=category,
            window_count=window,
            baseline_count=baseline,
            baseline_seconds=round(span, 1),
            expected_in_window=round(expected, 3),
            ratio=round(ratio, 3) if ratio is not None else None,
            alerting=alerting,
            active_since=datetime.fromtimestamp(since, UTC) if since is not None else None,
        )

    def record(self, category: str, n: int = 1) -> bool:
        """Count ``n`` predictions of ``category`` now; returns whether the category is alerting."""
        with self._lock:
            now = self.clock()
            self._add(category, n, now)
            window, baseline = self._counts(now)
            return self._evaluate(category, window[category], baseline[category], now).alerting

    def snapshot(self) -> AlertsSnapshot:
        """Every category's numbers and the active alerts, evaluated now (alerts clear here too)."""
        with self._lock:
            now = self.clock()
            window, baseline = self._counts(now)
            names = sorted(set(window) | set(baseline) | set(self._active))
            volumes = [self._evaluate(c, window[c], baseline[c], now) for c in names]
        # nothing expected (ratio null) is the sharpest spike; then the largest ratio first
        alerts = sorted((v for v in volumes if v.alerting), key=lambda v: (v.ratio is not None, -(v.ratio or 0.0)))
        return AlertsSnapshot(
            generated_at=datetime.fromtimestamp(now, UTC),
            window_seconds=self.window_s,
            baseline_seconds=self.baseline_s,
            ratio_threshold=self.ratio,
            min_count=self.min_count,
            warming_up=now - self.started_at < self.min_history_s,
            alerts=alerts,
            categories=volumes,
        )
