"""The HTTP port's connection caps: a trusted reverse proxy is held to the global cap only."""

from __future__ import annotations

import asyncio
import ipaddress

from launcher.http_guard import ConnectionGuard, HttpLimits


class _Peer(asyncio.BaseTransport):
    """A transport that only says where it comes from: all the guard asks of one."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self._address = address

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self._address, 40_000) if name == "peername" else default


def _guard(*, proxies: str = "") -> ConnectionGuard:
    networks = tuple(ipaddress.ip_network(part) for part in proxies.split(",") if part)
    return ConnectionGuard(
        HttpLimits(
            idle_timeout_s=1.0,
            head_timeout_s=1.0,
            body_timeout_s=1.0,
            max_per_address=2,
            max_connections=5,
            proxies=networks,
        )
    )


async def test_an_address_past_its_cap_is_refused_and_its_released_place_reused() -> None:
    guard = _guard()
    first, second, third = _Peer("192.0.2.1"), _Peer("192.0.2.1"), _Peer("192.0.2.1")
    assert [guard.admit(first), guard.admit(second), guard.admit(third)] == [True, True, False]
    assert guard.admit(_Peer("192.0.2.2"))
    guard.release(first)
    assert guard.admit(third)


async def test_a_trusted_proxy_passes_the_address_cap_but_not_the_global_one() -> None:
    guard = _guard(proxies="10.0.0.0/8")
    admitted = [guard.admit(_Peer("10.1.2.3")) for _ in range(6)]
    assert admitted == [True, True, True, True, True, False]
    assert not guard.admit(_Peer("192.0.2.1"))
