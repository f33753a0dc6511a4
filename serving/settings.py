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
    log_text: bool = Field(False, description="log complaint text (off by default: privacy)")

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
            "log_text": env.get("TRIAGE_LOG_TEXT", "").lower() in ("1", "true", "yes"),
        }
        for field, name in (
            ("max_concurrent_inferences", "TRIAGE_MAX_CONCURRENT"),
            ("max_queue", "TRIAGE_MAX_QUEUE"),
            ("max_body_bytes", "TRIAGE_MAX_BODY_BYTES"),
        ):
            if env.get(name):
                values[field] = int(env[name])
        return cls(**{k: v for k, v in values.items() if v is not None})
