"""Service settings from ``TRIAGE_*`` environment variables (pydantic-settings), read once at start-up.

Every limit is a field, so every limit is settable: ``TRIAGE_<FIELD NAME>`` (``TRIAGE_MAX_QUEUE=128``,
``TRIAGE_QUEUE_TIMEOUT_MS=500``). Key lists are comma-separated (``TRIAGE_API_KEYS=k1,k2``); an entry
may name its key, ``id:secret``, and that id (never the secret) is what logs and feedback records
carry. Tests and embedding code pass values directly: ``Settings(max_queue=8)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from triage_model.micro_batching import MAX_CONCURRENT_RUNS

KeyList = Annotated[list[str], NoDecode]
"""A comma-separated list in the environment (not JSON), a list in Python."""


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's cpuset), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRIAGE_", extra="ignore", populate_by_name=True, protected_namespaces=())

    # -- the model ---------------------------------------------------------------------------------
    model_dir: Path | None = Field(
        None, description="exported model directory to serve, or a bundled model by name (default, student); None = the shipped default"
    )
    models_root: Path | None = Field(
        None,
        description="POST /v1/admin/reload may load only directories inside this one (resolved, symlinks followed); "
        "unset: only the configured model_dir can be reloaded",
    )
    threads: int | None = Field(None, ge=1, description="onnxruntime intra-op threads (None: all cores)")
    ort_allow_spinning: bool | None = Field(
        None,
        description="onnxruntime intra-op threads busy-wait for work between parallel sections (session.intra_op.allow_spinning). "
        "Default: off with dynamic batching (measured: spinning threads take the cores that request handling and escalation "
        "need between runs), onnxruntime's own default (on) without",
    )
    canary_min_accuracy: float = Field(
        0.5, ge=0, le=1, description="a (re)loaded model must get at least this share of each head right on the pinned canary set"
    )
    canary_min_critical_recall: float = Field(
        0.6, ge=0, le=1, description="... and find at least this share of the canary set's 一级 complaints"
    )
    reload_marker: Path | None = Field(
        None,
        description="several workers: a JSON file every worker watches. A worker that reloads (POST /v1/admin/reload, "
        "SIGHUP) writes the directory it loaded there, and the others load the same one (same checks, same canary) "
        "within reload_poll_s. `triage serve --workers N` sets one in its run directory; unset: a reload reaches one process",
    )
    reload_poll_s: float = Field(2.0, gt=0, le=300, description="how often each worker looks at reload_marker (seconds)")

    # -- keys and scopes ---------------------------------------------------------------------------
    api_keys: KeyList = Field(default_factory=list, description="scope triage (/v1/triage*, /v1/model, /v1/alerts); set: a key is required")
    feedback_keys: KeyList = Field(default_factory=list, description="scope feedback (POST /v1/feedback); unset: feedback is off")
    admin_keys: KeyList = Field(default_factory=list, description="scope admin (reload; implies every other scope); unset: admin is off")
    metrics_keys: KeyList = Field(default_factory=list, description="scope metrics (GET /metrics), e.g. for the Prometheus scraper")

    # -- request limits ----------------------------------------------------------------------------
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="request body limit (413 over it)")
    max_text_chars: int = Field(100_000, ge=1, description="characters per complaint (413 over it)")
    max_batch_items: int = Field(64, ge=1, description="items per POST /v1/triage/batch (413 over it)")
    micro_batch_size: int = Field(32, ge=1, description="texts per onnxruntime run (without dynamic batching)")
    max_request_id_chars: int = Field(128, ge=8, le=1024, description="longest X-Request-ID echoed (longer ones are cut)")

    # -- dynamic batching ---------------------------------------------------------------------------
    dynamic_batching: bool = Field(
        True,
        description="concurrent requests share onnxruntime runs (triage_model.micro_batching): while one run computes, "
        "the texts of the requests that arrive queue and go together into the next one (grouped by length); off: each "
        "request runs its own (micro_batch_size texts per run)",
    )
    batch_max_texts: int = Field(32, ge=1, description="dynamic batching: most texts per shared batch (a larger request runs alone)")
    batch_max_wait_ms: float = Field(
        0, ge=0, le=1000, description="dynamic batching: how long a lone waiting request waits for companions (0: runs at once)"
    )
    batch_concurrent_runs: Annotated[int, Field(ge=1, le=MAX_CONCURRENT_RUNS)] | Literal["auto"] = Field(
        "auto",
        description="dynamic batching: onnxruntime runs in flight at once, each in its own thread. With more than one, "
        "threads defaults to cores // runs, so the runs share the cores instead of each claiming all of them. "
        "auto: decided at every model load — 2 for a model of at most 6 encoder layers (the student), else 1 "
        "(serving/run_plan.py says why)",
    )
    batch_max_queued_texts: int = Field(
        512, ge=1, description="dynamic batching: texts waiting for a run; a request that would pass it gets 429 with Retry-After"
    )

    # -- load shedding -----------------------------------------------------------------------------
    max_concurrent: int | None = Field(
        None,
        ge=1,
        description="inference slots: requests admitted past the gate at once. Default: 2 without dynamic batching "
        "(onnxruntime already uses every core for one run); with it batch_max_texts, a batch's worth: admitted requests "
        "share runs (one onnxruntime run at a time), the rest wait at the gate where max_queue and queue_timeout_ms "
        "apply. Measured at 64 clients: the same goodput as 2 × batch_max_texts, and latency stays bounded by the gate",
    )
    max_queue: int = Field(64, ge=0, description="requests waiting for a slot; one more gets 429")
    queue_timeout_ms: int = Field(1500, ge=1, description="a request that cannot start within this gets 503 with Retry-After")

    # -- feedback ----------------------------------------------------------------------------------
    corrections_dir: Path = Field(Path("labeled_data/corrections"), description="where POST /v1/feedback appends <YYYY-MM>.jsonl")
    feedback_max_body_bytes: int = Field(64 * 1024, ge=1024, description="body limit of POST /v1/feedback")
    feedback_max_text_chars: int = Field(20_000, ge=1, description="characters of a corrected complaint text")
    feedback_per_minute: int = Field(30, ge=1, description="corrections per key per minute (token bucket; 429 over it)")
    feedback_burst: int = Field(10, ge=1, description="corrections a key may send at once before the per-minute rate applies")

    # -- metrics -----------------------------------------------------------------------------------
    metrics_port: int | None = Field(None, ge=1, le=65535, description="serve /metrics on this port instead (and not on the API port)")
    metrics_host: str = Field("127.0.0.1", description="bind address of the metrics port")

    # -- escalation and alerts ---------------------------------------------------------------------
    escalation_policy: Path | None = Field(None, description="escalation policy YAML; None = the packaged one")
    alert_window_s: int = Field(900, gt=0, description="volume alerts: recent window (seconds)")
    alert_baseline_s: int = Field(86_400, gt=0, description="volume alerts: baseline period before the window (seconds)")
    alert_ratio: float = Field(3.0, gt=0, description="alert when the window count > ratio × the baseline rate scaled to the window")
    alert_min_count: int = Field(20, ge=1, description="... and the window count is at least this")
    alert_bucket_s: int = Field(60, gt=0, description="counting bucket width (seconds)")
    alert_min_history_s: int = Field(3_600, ge=0, description="no alerts until this much history has been seen")
    alert_backend: Literal["memory", "redis"] = Field(
        "memory", description="memory: per process; redis: shared by every worker and replica"
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="the Redis server of alert_backend=redis")
    alert_redis_prefix: str = Field("triage:volume", min_length=1, description="key prefix of the alert counters in Redis")

    @field_validator("api_keys", "feedback_keys", "admin_keys", "metrics_keys", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _windows(self) -> Settings:
        if not 0 < self.alert_bucket_s <= self.alert_window_s < self.alert_baseline_s:
            raise ValueError("need 0 < alert_bucket_s <= alert_window_s < alert_baseline_s")
        return self

    @model_validator(mode="after")
    def _batching_defaults(self) -> Settings:
        if self.max_concurrent is None:
            self.max_concurrent = self.batch_max_texts if self.dynamic_batching else 2
        if self.ort_allow_spinning is None and self.dynamic_batching:
            self.ort_allow_spinning = False
        return self

    @classmethod
    def from_env(cls) -> Settings:
        """The settings of a served process: ``TRIAGE_*`` environment variables over the defaults."""
        return cls()
