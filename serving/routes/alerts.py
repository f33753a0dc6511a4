"""``GET /v1/alerts``: categories whose complaint volume is spiking now, with the numbers behind it."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from serving.alerts import AlertsSnapshot, VolumeMonitor
from serving.deps import get_monitor, require_api_key
from serving.schemas import ErrorResponse

router = APIRouter(prefix="/v1", tags=["alerts"], dependencies=[Depends(require_api_key)], responses={401: {"model": ErrorResponse}})


@router.get("/alerts", response_model=AlertsSnapshot, summary="active volume alerts (预警) per category")
def list_alerts(monitor: VolumeMonitor = Depends(get_monitor)) -> AlertsSnapshot:
    """A category alerts while its count in the last window exceeds ``ratio`` × its baseline rate
    scaled to the window and reaches ``min_count``. State is per worker process."""
    return monitor.snapshot()
