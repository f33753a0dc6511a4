"""Property-based API tests: schemathesis drives every operation from the OpenAPI schema; no 5xx ever.

Requests are generated from the schema (valid and invalid bodies, wrong types, odd unicode), sent
in-process through ASGI, and every response must be a non-5xx that conforms to the schema.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

from serving.app import create_app  # noqa: E402
from serving.settings import Settings  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from triage_model.model_dir import DEFAULT_MODEL_DIR, META_FILE  # noqa: E402


def _model_dir():
    for candidate in (DEFAULT_MODEL_DIR, REPO / "runs" / "smoke-onnx"):
        if (candidate / META_FILE).exists():
            return candidate
    return None


def _app(tmp_dir: str):
    settings_ = Settings(model_dir=_model_dir(), corrections_dir=tmp_dir)
    app = create_app(settings_)
    app.state.holder.load(settings_.model_dir)  # the lifespan's job; done here so no server is needed
    return app


if _model_dir() is None:  # pragma: no cover - only without any exported model
    pytest.skip("no exported model", allow_module_level=True)

import tempfile  # noqa: E402

APP = _app(tempfile.mkdtemp(prefix="fuzz-corrections-"))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_ever_answers_5xx(case):
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.path} → {response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        body = response.json()
        assert {"error", "error_type", "request_id"} <= set(body), body
