"""``GET /v1/alerts``: categories whose complaint volume is spiking now, with the numbers behind it."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from serving.alerts import AlertsSnapshot, VolumeMonitor
from serving.deps import get_monitor, require_triage
from serving.errors import ApiError
from serving.observability import ALERT_STORE_ERRORS
from serving.schemas import ErrorResponse

router = APIRouter(
    prefix="/v1", tags=["alerts"], dependencies=[Depends(require_triage)], responses={c: {"model": ErrorResponse} for c in (401, 403, 503)}
)


@router.get("/alerts", response_model=AlertsSnapshot, summary="active volume alerts (预警) per category")
async def list_alerts(monitor: VolumeMonitor = Depends(get_monitor)) -> AlertsSnapshot:
    """A category alerts while its count in the last window exceeds ``ratio`` × its baseline rate
    scaled to the window and reaches ``min_count``. State is per worker process, or shared by every
    worker with TRIAGE_ALERT_BACKEND=redis."""
    try:
        return await run_in_threadpool(monitor.snapshot)
    except Exception as err:  # the store (Redis) is unreachable
        ALERT_STORE_ERRORS.inc()
        raise ApiError(
            503, "alerts_unavailable", f"the alert store cannot be read ({type(err).__name__})", headers={"Retry-After": "5"}
        ) from err
