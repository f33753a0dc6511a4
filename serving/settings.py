"""Service settings, read once from ``TRIAGE_*`` environment variables (12-factor style)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field


def _env_list(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


class Settings(BaseModel):
    model_dir: Path | None = Field(None, description="exported model directory; None = the shipped default")
    intra_op_threads: int | None = Field(None, description="onnxruntime intra-op threads (None: all cores)")
    max_body_bytes: int = 2 * 1024 * 1024
    max_text_chars: int = 100_000
    max_batch_items: int = 64
    micro_batch_size: int = 32
    max_concurrent_inferences: int = 2
    max_queue: int = 64
    api_keys: list[str] = Field(default_factory=list, description="if set, X-API-Key must be one of these")
    admin_keys: list[str] = Field(default_factory=list, description="keys allowed to call /v1/admin/*")
    corrections_dir: Path = Field(Path("labeled_data/corrections"), description="where POST /v1/feedback appends <YYYY-MM>.jsonl")
    escalation_policy: Path | None = Field(None, description="escalation policy YAML; None = the packaged one")
    alert_window_s: int = Field(900, gt=0, description="volume alerts: recent window (seconds)")
    alert_baseline_s: int = Field(86_400, gt=0, description="volume alerts: baseline period before the window (seconds)")
    alert_ratio: float = Field(3.0, gt=0, description="alert when the window count > ratio × the baseline rate scaled to the window")
    alert_min_count: int = Field(20, ge=1, description="... and the window count is at least this")
    alert_bucket_s: int = Field(60, gt=0, description="counting bucket width (seconds)")
    alert_min_history_s: int = Field(3_600, ge=0, description="no alerts until this much history has been seen")

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ

        def opt_int(name: str) -> int | None:
            return int(env[name]) if env.get(name) else None

        values: dict = {
            "model_dir": Path(env["TRIAGE_MODEL_DIR"]) if env.get("TRIAGE_MODEL_DIR") else None,
            "intra_op_threads": opt_int("TRIAGE_THREADS"),
            "api_keys": _env_list("TRIAGE_API_KEYS"),
            "admin_keys": _env_list("TRIAGE_ADMIN_KEYS"),
            "corrections_dir": Path(env["TRIAGE_CORRECTIONS_DIR"]) if env.get("TRIAGE_CORRECTIONS_DIR") else None,
            "escalation_policy": Path(env["TRIAGE_ESCALATION_POLICY"]) if env.get("TRIAGE_ESCALATION_POLICY") else None,
            "alert_ratio": float(env["TRIAGE_ALERT_RATIO"]) if env.get("TRIAGE_ALERT_RATIO") else None,
        }
        for field, name in (
            ("max_concurrent_inferences", "TRIAGE_MAX_CONCURRENT"),
            ("max_queue", "TRIAGE_MAX_QUEUE"),
            ("max_body_bytes", "TRIAGE_MAX_BODY_BYTES"),
            ("alert_window_s", "TRIAGE_ALERT_WINDOW_S"),
            ("alert_baseline_s", "TRIAGE_ALERT_BASELINE_S"),
            ("alert_min_count", "TRIAGE_ALERT_MIN_COUNT"),
            ("alert_bucket_s", "TRIAGE_ALERT_BUCKET_S"),
            ("alert_min_history_s", "TRIAGE_ALERT_MIN_HISTORY_S"),
        ):
            if env.get(name):
                values[field] = int(env[name])
        return cls(**{k: v for k, v in values.items() if v is not None})
