"""A lease holder frozen in place, as a paused process is (``SIGSTOP``, a long GC, a VM migration)."""

from __future__ import annotations

from cluster.leases import ShardLeases

__all__ = ["freeze"]


def freeze(leases: ShardLeases) -> None:
    """Stop the holder's lease loop and its deadline timer: it believes what it believed.

    Its subscriptions and everything else of its process still run (a whole paused process is
    what the cluster tests' ``SIGSTOP`` is for); only what would tell it the lease is gone stops.
    """
    assert leases._task is not None, "the holder was not started"
    leases._task.cancel()
    if leases._expiry is not None:
        leases._expiry.cancel()
