"""Liveness and readiness: answers only when the database does."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from api.deps import SessionDep, StateDep

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Counters in the Prometheus text format (push sent / failed / retried / removed...)."""
    return Response(state.metrics(), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", responses={503: {"description": "Unhealthy: the problems, one line each"}})
async def healthz(session: SessionDep, state: StateDep) -> JSONResponse:
    """``{"status": "ok"}`` once the account database answers a query and nothing else is wrong.

    In a cluster, a NATS connection down or a consumer loop dead or stalled answers 503
    ``{"status": "unhealthy", "problems": [...]}``.
    """
    await session.execute(text("SELECT 1"))
    problems = state.health_problems()
    if problems:
        return JSONResponse({"status": "unhealthy", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ok"})
