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

State: where the counts live is a ``VolumeStore``. ``MemoryStore`` (the default) keeps them in this
process, so with ``triage serve --workers N`` each worker sees about 1/N of the traffic and alerts on
its own share. ``RedisStore`` (``TRIAGE_ALERT_BACKEND=redis``, ``TRIAGE_REDIS_URL``) shares them
between every worker and replica: ``INCRBY {prefix}:c:{category}:{bucket}`` plus ``EXPIRE`` of the
baseline + window on every prediction (one pipelined round trip), the window and baseline summed with
one ``MGET`` per category, the start of history with ``SET NX``, active alerts in one hash
(``HSETNX`` decides which worker raises the alert, so it is counted once). The arithmetic is the same.
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


class VolumeStore:
    """Where the per-category bucket counts, the start of history and the active alerts live."""

    def start(self, now: float) -> float:
        """The start of history (set by the first caller; later callers get the first one's)."""
        raise NotImplementedError

    def add(self, category: str, n: int, bucket: int, now: float) -> None:
        raise NotImplementedError

    def sums(self, categories: list[str] | None, window: range, baseline: range) -> tuple[Counter[str], Counter[str]]:
        """(window counts, baseline counts) per category (``None``: every category seen)."""
        raise NotImplementedError

    def activate(self, category: str, now: float) -> bool:
        """Mark ``category`` alerting since ``now`` unless it already is; True when this call did it."""
        raise NotImplementedError

    def deactivate(self, category: str) -> None:
        raise NotImplementedError

    def active(self) -> dict[str, float]:
        raise NotImplementedError


class MemoryStore(VolumeStore):
    """In-process state (one worker's view). Not locked itself: ``VolumeMonitor`` holds its lock."""

    def __init__(self, keep_buckets: int) -> None:
        self.keep_buckets = keep_buckets
        self._started: float | None = None
        self._buckets: dict[int, Counter[str]] = {}
        self._active: dict[str, float] = {}

    def start(self, now: float) -> float:
        if self._started is None:
            self._started = now
        return self._started

    def add(self, category: str, n: int, bucket: int, now: float) -> None:
        self._buckets.setdefault(bucket, Counter())[category] += n
        oldest = bucket - self.keep_buckets
        for idx in [i for i in self._buckets if i < oldest]:
            del self._buckets[idx]

    def sums(self, categories: list[str] | None, window: range, baseline: range) -> tuple[Counter[str], Counter[str]]:
        win, base = Counter(), Counter()
        for idx, counts in self._buckets.items():
            if idx in window:
                win.update(counts)
            elif idx in baseline:
                base.update(counts)
        if categories is not None:
            win = Counter({c: win[c] for c in categories})
            base = Counter({c: base[c] for c in categories})
        return win, base

    def activate(self, category: str, now: float) -> bool:
        if category in self._active:
            return False
        self._active[category] = now
        return True

    def deactivate(self, category: str) -> None:
        self._active.pop(category, None)

    def active(self) -> dict[str, float]:
        return dict(self._active)


class RedisStore(VolumeStore):
    """State shared by every worker and replica, in Redis (see the module docstring for the keys)."""

    def __init__(self, client, prefix: str, ttl_s: int) -> None:
        self.r = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._started: float | None = None

    @classmethod
    def from_url(cls, url: str, prefix: str, ttl_s: int) -> RedisStore:
        import redis

        return cls(redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5, decode_responses=True), prefix, ttl_s)

    def _key(self, category: str, bucket: int) -> str:
        return f"{self.prefix}:c:{category}:{bucket}"

    def start(self, now: float) -> float:
        if self._started is None:
            key = f"{self.prefix}:started"
            self.r.set(key, repr(now), nx=True)
            self._started = float(self.r.get(key))
        return self._started

    def add(self, category: str, n: int, bucket: int, now: float) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.incrby(self._key(category, bucket), n)
        pipe.expire(self._key(category, bucket), self.ttl_s)
        pipe.sadd(f"{self.prefix}:categories", category)
        pipe.execute()

    def sums(self, categories: list[str] | None, window: range, baseline: range) -> tuple[Counter[str], Counter[str]]:
        names = sorted(self.r.smembers(f"{self.prefix}:categories")) if categories is None else categories
        buckets = [*baseline, *window]
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.mget([self._key(name, b) for b in buckets])
        win, base = Counter(), Counter()
        for name, values in zip(names, pipe.execute(), strict=True):
            counts = [int(v) if v else 0 for v in values]
            base[name] = sum(counts[: len(baseline)])
            win[name] = sum(counts[len(baseline) :])
        return win, base

    def activate(self, category: str, now: float) -> bool:
        return bool(self.r.hsetnx(f"{self.prefix}:active", category, repr(now)))

    def deactivate(self, category: str) -> None:
        self.r.hdel(f"{self.prefix}:active", category)

    def active(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.r.hgetall(f"{self.prefix}:active").items()}


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
        store: VolumeStore | None = None,
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
        self.store = store or MemoryStore(keep_buckets=(baseline_s + window_s) // bucket_s + 1)
        self._lock = threading.Lock()
        self.started_at = self.store.start(clock())

    def _ranges(self, now: float) -> tuple[range, range]:
        """The window is the last ``window_s / bucket_s`` buckets (the current one included), the
        baseline the ``baseline_s / bucket_s`` buckets before it."""
        current = int(now // self.bucket_s)
        window_first = current - self.window_s // self.bucket_s + 1
        baseline_first = window_first - self.baseline_s // self.bucket_s
        return range(window_first, current + 1), range(baseline_first, window_first)

    # -- decisions --------------------------------------------------------------------------------

    def _evaluate(self, category: str, window: int, baseline: int, now: float, active: dict[str, float]) -> CategoryVolume:
        history = now - self.started_at
        span = max(0.0, min(self.baseline_s, history - self.window_s))
        expected = baseline / span * self.window_s if span > 0 else 0.0
        ratio = window / expected if expected > 0 else None
        alerting = (
            history >= self.min_history_s and span > 0 and window >= self.min_count and (expected == 0 or window > self.ratio * expected)
        )
        since = active.get(category)
        if alerting and since is None:
            if self.store.activate(category, now):  # only the worker that flips it counts the alert
                VOLUME_ALERTS_RAISED.labels(category=category).inc()
            since = self.store.active().get(category, now)
        elif not alerting and since is not None:
            self.store.deactivate(category)
            since = None
        VOLUME_ALERT_ACTIVE.labels(category=category).set(1 if alerting else 0)
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
            self.store.add(category, n, int(now // self.bucket_s), now)
            window, baseline = self.store.sums([category], *self._ranges(now))
            return self._evaluate(category, window[category], baseline[category], now, self.store.active()).alerting

    def snapshot(self) -> AlertsSnapshot:
        """Every category's numbers and the active alerts, evaluated now (alerts clear here too)."""
        with self._lock:
            now = self.clock()
            window, baseline = self.store.sums(None, *self._ranges(now))
            active = self.store.active()
            names = sorted(n for n in set(window) | set(baseline) | set(active) if window[n] or baseline[n] or n in active)
            volumes = [self._evaluate(c, window[c], baseline[c], now, active) for c in names]
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


def build_monitor(settings, clock: Callable[[], float] = time.time) -> VolumeMonitor:
    """The monitor the settings ask for: in-process (default) or shared through Redis."""
    store = None
    if settings.alert_backend == "redis":
        ttl = settings.alert_baseline_s + settings.alert_window_s + 2 * settings.alert_bucket_s
        store = RedisStore.from_url(settings.redis_url, settings.alert_redis_prefix, ttl)
    return VolumeMonitor(
        window_s=settings.alert_window_s,
        baseline_s=settings.alert_baseline_s,
        ratio=settings.alert_ratio,
        min_count=settings.alert_min_count,
        bucket_s=settings.alert_bucket_s,
        min_history_s=settings.alert_min_history_s,
        clock=clock,
        store=store,
    )
