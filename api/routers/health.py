"""Liveness and readiness: answers only when the database does."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from api.deps import SessionDep, StateDep

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Counters in the Prometheus text format (push sent / failed / retried / removed...)."""
    return Response(state.metrics(), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz")
async def healthz(session: SessionDep) -> dict[str, str]:
    """``{"status": "ok"}`` once the account database answers a query."""
    await session.execute(text("SELECT 1"))
    return {"status": "ok"}
