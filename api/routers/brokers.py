"""Where a device may connect: the live broker nodes, for a device whose node went away.

Login and refresh already answer the list; a device asks here only once every node it was
given has failed. So the question costs no durable write and no database: the access token
is checked by its signature (any node's token is valid on every broker node) and the answer
comes from the node registry held in memory (``cluster.registry.NodeDirectory``), cacheable
for as long as that view may be stale.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import StateDep, VerifiedToken
from api.schemas import BrokerList

__all__ = ["router"]

router = APIRouter(prefix="/v1/brokers", tags=["auth"])


@router.get("")
async def brokers(_claims: VerifiedToken, state: StateDep, response: Response) -> BrokerList:
    """The live broker nodes, least loaded first (the same list login answers)."""
    max_age_s = state.brokers_max_age_s
    response.headers["Cache-Control"] = f"private, max-age={int(max_age_s)}"
    return BrokerList(brokers=state.brokers(), max_age_s=max_age_s)
