"""Volume alerts (预警): fire on a spike against the category's own baseline, clear when it passes.

The same behaviour holds with the counts in Redis (``RedisStore``), and then two workers share them
(issue 14, item 14). Those tests start a real ``redis-server`` (Debian package ``redis-server``) on a
free loopback port and skip, saying why, when the binary is not installed; with
``TRIAGE_TEST_REQUIRE_REDIS=1`` (set by .ci/run) a missing binary fails instead.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
from prometheus_client import REGISTRY

from serving.alerts import RedisStore, VolumeMonitor
from tests.conftest import start_redis

HOUR = 3600


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def monitor(clock: FakeClock, **kw) -> VolumeMonitor:
    params = {"window_s": 900, "baseline_s": 24 * HOUR, "ratio": 3.0, "min_count": 10, "bucket_s": 60, "min_history_s": HOUR}
    return VolumeMonitor(**{**params, **kw}, clock=clock)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A private redis-server for this module (no persistence), or a skip that says why."""
    if shutil.which("redis-server") is None:
        if os.environ.get("TRIAGE_TEST_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not installed (apt-get install redis-server) and TRIAGE_TEST_REQUIRE_REDIS=1")
        pytest.skip("redis-server binary not found: apt-get install redis-server to run the shared-alert tests")
    url, proc = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.terminate()
    proc.wait(10)


def redis_monitor(url: str, prefix: str, clock: FakeClock, **kw) -> VolumeMonitor:
    params = {"window_s": 900, "baseline_s": 24 * HOUR, "ratio": 3.0, "min_count": 10, "bucket_s": 60, "min_history_s": HOUR}
    params.update(kw)
    store = RedisStore.from_url(url, prefix, params["baseline_s"] + params["window_s"] + 120)
    return VolumeMonitor(**params, clock=clock, store=store)


@pytest.fixture(params=["memory", "redis"])
def make_monitor(request):
    """Builds monitors of one backend; with redis, every monitor made in one test shares the state."""
    if request.param == "memory":
        return lambda clock, **kw: monitor(clock, **kw)
    url = request.getfixturevalue("redis_url")
    prefix = f"t{time.monotonic_ns()}"
    return lambda clock, **kw: redis_monitor(url, prefix, clock, **kw)


def steady(m: VolumeMonitor, clock: FakeClock, category: str, per_hour: int, hours: int) -> None:
    """``per_hour`` predictions of ``category`` spread evenly over ``hours``."""
    step = HOUR / per_hour
    for _ in range(per_hour * hours):
        m.record(category)
        clock.advance(step)


def test_a_spike_over_the_baseline_fires_and_clears_when_it_passes(make_monitor):
    clock = FakeClock()
    m = make_monitor(clock)
    steady(m, clock, "物流配送", per_hour=8, hours=6)  # baseline: 2 per 15 minutes
    assert m.snapshot().alerts == []
    for _ in range(30):  # 30 in the next 5 minutes: 15× the usual rate
        m.record("物流配送")
        clock.advance(10)
    snap = m.snapshot()
    [alert] = snap.alerts
    assert alert.category == "物流配送" and alert.alerting
    assert alert.window_count >= 30 and alert.expected_in_window == pytest.approx(2.0, rel=0.2)
    assert alert.ratio > 3 and alert.active_since is not None
    clock.advance(16 * 60)  # the spike leaves the window
    assert m.snapshot().alerts == []


def test_a_small_count_never_alerts_even_against_a_zero_baseline(make_monitor):
    clock = FakeClock()
    m = make_monitor(clock)
    steady(m, clock, "物流配送", per_hour=4, hours=2)
    for _ in range(9):  # below min_count
        m.record("账户与隐私")
    assert m.snapshot().alerts == []
    m.record("账户与隐私")  # the 10th, nothing expected → alert
    [alert] = m.snapshot().alerts
    assert alert.category == "账户与隐私" and alert.ratio is None and alert.expected_in_window == 0


def test_steady_high_volume_is_not_a_spike(make_monitor):
    clock = FakeClock()
    m = make_monitor(clock)
    steady(m, clock, "售后服务", per_hour=200, hours=4)
    volume = {v.category: v for v in m.snapshot().categories}["售后服务"]
    assert volume.window_count >= 10 and not volume.alerting
    assert volume.ratio == pytest.approx(1.0, rel=0.15)


def test_nothing_alerts_while_warming_up(make_monitor):
    clock = FakeClock()
    m = make_monitor(clock)
    for _ in range(50):
        m.record("系统故障")
        clock.advance(1)
    snap = m.snapshot()
    assert snap.warming_up and snap.alerts == []


def test_active_alert_is_exported_to_prometheus():
    clock = FakeClock()
    m = monitor(clock)
    steady(m, clock, "营销宣传", per_hour=4, hours=2)
    for _ in range(20):
        m.record("营销宣传")
    m.snapshot()
    assert REGISTRY.get_sample_value("triage_volume_alert_active", {"category": "营销宣传"}) == 1.0
    raised = REGISTRY.get_sample_value("triage_volume_alerts_total", {"category": "营销宣传"})
    clock.advance(HOUR)
    m.snapshot()
    assert REGISTRY.get_sample_value("triage_volume_alert_active", {"category": "营销宣传"}) == 0.0
    assert REGISTRY.get_sample_value("triage_volume_alerts_total", {"category": "营销宣传"}) == raised


def test_old_buckets_are_dropped():
    clock = FakeClock()
    m = monitor(clock, baseline_s=2 * HOUR)
    steady(m, clock, "订单交易", per_hour=60, hours=5)
    assert len(m.store._buckets) <= (2 * HOUR + 900) // 60 + 2


def test_concurrent_records_are_all_counted():
    clock = FakeClock()
    m = monitor(clock)

    def work() -> None:
        for _ in range(500):
            m.record("咨询建议")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {v.category: v.window_count for v in m.snapshot().categories}["咨询建议"] == 4000


def test_bad_windows_are_refused():
    with pytest.raises(ValueError):
        VolumeMonitor(window_s=900, baseline_s=600)


def test_alerts_endpoint_lists_active_alerts_with_their_numbers(served_model_dir):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import Settings

    clock = FakeClock()
    app = create_app(Settings(model_dir=served_model_dir, alert_min_count=3))
    with TestClient(app) as c:
        app.state.volume = monitor(clock, min_count=3)
        assert c.get("/v1/alerts").json()["warming_up"] is True
        clock.advance(2 * HOUR)
        for _ in range(3):
            assert c.post("/v1/triage", json={"text": "银行卡被盗刷了五千块，不是我本人操作的"}).status_code == 200
        body = c.get("/v1/alerts").json()
        assert body["warming_up"] is False and body["window_seconds"] == 900
        [alert] = body["alerts"]
        assert alert["window_count"] == 3 and alert["alerting"] is True
        assert {"category", "baseline_count", "expected_in_window", "ratio", "active_since"} <= set(alert)
        clock.advance(HOUR)
        assert c.get("/v1/alerts").json()["alerts"] == []


def test_two_workers_sharing_redis_see_all_traffic_and_raise_one_alert(redis_url):
    """Each worker gets half of a spike: alone (in-process state) neither would alert; with the counts
    in Redis both see the whole spike, and the alert is raised once, not once per worker."""
    clock = FakeClock()
    prefix = f"t{time.monotonic_ns()}"
    a, b = redis_monitor(redis_url, prefix, clock), redis_monitor(redis_url, prefix, clock)
    a_alone = monitor(clock)  # what worker a would know with in-process state
    for i in range(8 * 4):  # a steady 8 per hour for 4 hours, alternating workers
        (a if i % 2 else b).record("物流配送")
        clock.advance(HOUR / 8)
    raised = REGISTRY.get_sample_value("triage_volume_alerts_total", {"category": "账户与隐私"}) or 0.0
    for i in range(12):  # 12 in two minutes, 6 per worker, against a baseline of none
        if i % 2:
            a.record("账户与隐私")
            a_alone.record("账户与隐私")
        else:
            b.record("账户与隐私")
        clock.advance(10)
    [alert_a], [alert_b] = a.snapshot().alerts, b.snapshot().alerts
    assert alert_a.category == alert_b.category == "账户与隐私" and alert_a.window_count == alert_b.window_count == 12
    assert alert_a.active_since == alert_b.active_since
    assert REGISTRY.get_sample_value("triage_volume_alerts_total", {"category": "账户与隐私"}) == raised + 1
    assert a_alone.snapshot().alerts == [], "6 of its own is below min_count: one worker alone misses the spike"
    clock.advance(2 * HOUR)
    assert a.snapshot().alerts == [] and b.snapshot().alerts == []


def test_the_redis_backend_is_chosen_by_the_settings_and_an_outage_never_fails_a_prediction(redis_url, served_model_dir):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import Settings

    settings = Settings(
        model_dir=served_model_dir, alert_backend="redis", redis_url=redis_url, alert_redis_prefix=f"app{time.monotonic_ns()}"
    )
    app = create_app(settings)
    assert isinstance(app.state.volume.store, RedisStore)
    with TestClient(app) as c:
        assert c.post("/v1/triage", json={"text": "银行卡被盗刷了五千块"}).status_code == 200
        assert sum(v["window_count"] for v in c.get("/v1/alerts").json()["categories"]) == 1
        app.state.volume.store = RedisStore.from_url("redis://127.0.0.1:1/0", "down", 60)  # nothing listens on port 1
        assert c.post("/v1/triage", json={"text": "银行卡被盗刷了五千块"}).status_code == 200
        r = c.get("/v1/alerts")
        assert r.status_code == 503 and r.json()["error_type"] == "alerts_unavailable"
