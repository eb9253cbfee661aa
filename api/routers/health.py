"""Liveness and readiness: answers only when the database does."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from api.deps import SessionDep

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(session: SessionDep) -> dict[str, str]:
    """``{"status": "ok"}`` once the account database answers a query."""
    await session.execute(text("SELECT 1"))
    return {"status": "ok"}
