"""The HTTP port under slow and idle sockets: they are closed on time or refused, and chat goes on.

The attack comes from other loopback addresses (127.0.0.2, ...) than the devices (127.0.0.1),
as it would from other hosts: the per-address cap is what keeps it from the devices' share.
"""

from __future__ import annotations

import contextlib
import json
import re
import resource
import selectors
import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from client import HubbubClient, Pending
from tests.support.api import ApiClient, Login
from tests.support.chat import WAIT_S, client_factory, expect_event
from tests.support.mqtt import Device
from tests.support.platform import Platform, start_platform

ATTACK_ADDRESSES = [f"127.0.0.{host}" for host in range(2, 40)]
SLOW_PER_KIND = 100  # connections of each slow kind: silent, half a request line, trickled headers
# Connections of each other kind: made one request and stay idle, send blank lines, too big a
# head, or half a body.
FEW = 10
TRICKLE_EVERY_S = 0.2  # a trickled head gets one byte this often: far too slowly
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: hubbub\r\n\r\n"
# The request line and a first header at once, then a header that would take minutes at one
# byte per trickle.
HEAD_START = b"GET /healthz HTTP/1.1\r\nHost: hubbub\r\n"
HALF_A_BODY = b'POST /v1/users HTTP/1.1\r\nHost: hubbub\r\nContent-Length: 100\r\n\r\n{"user'
ENDLESS_HEADER = b"X-Pad: " + b"a" * 4096 + b"\r\n\r\n"
REPORT = re.compile(r"HTTP connections closed or refused: ((?:\w+=\d+ ?)+)")
OK, TIMED_OUT = b"HTTP/1.1 200 OK", b"HTTP/1.1 408 Request Timeout"
REFUSED = b"HTTP/1.1 503 Service Unavailable"
HEAD_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large"
# The reasons the platform's report counts.
SLOW_HEAD, IDLE = "slow_head", "idle"
OVER_ADDRESS_CAP, OVER_GLOBAL_CAP = "over_address_cap", "over_global_cap"


def _connect_from(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _port_of(platform: Platform) -> int:
    return int(platform.http_url.rsplit(":", 1)[1])


def _reported(platform: Platform) -> Counter[str]:
    """The sums of every count the platform logged about closed and refused connections."""
    totals: Counter[str] = Counter()
    for match in REPORT.finditer(platform.process.log()):
        for pair in match.group(1).split():
            reason, count = pair.split("=")
            totals[reason] += int(count)
    return totals


def _response_to(sock: socket.socket, request: bytes) -> bytes:
    """Send ``request`` and read one response head, within a bounded wait.

    A refused connection may be closed before the request is sent: its 503 is read all the same.
    """
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(request)
    sock.settimeout(WAIT_S)
    received = b""
    while b"\r\n\r\n" not in received:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received


def _close_and_wait(sock: socket.socket) -> None:
    """Close our side and wait (bounded) until the server has closed its side too."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(WAIT_S)
        while sock.recv(4096):
            pass
    except OSError:  # already reset by the server: closed on its side
        pass
    sock.close()


@dataclass
class _Slow:
    """One attacking connection and what the server sent on it before closing."""

    sock: socket.socket
    kind: str
    trickle: bytes = b""
    received: bytes = b""
    reset: bool = False
    send_failed: bool = False


def _read_until_all_closed(slows: list[_Slow], bound_s: float) -> None:
    """Read every connection to its end, trickling the slow heads meanwhile; fail past ``bound_s``."""
    selector = selectors.DefaultSelector()
    for slow in slows:
        slow.sock.setblocking(False)  # noqa: FBT003 - the socket API
        selector.register(slow.sock, selectors.EVENT_READ, slow)
    give_up_at = time.monotonic() + bound_s
    next_trickle = 0.0
    try:
        while selector.get_map():
            now = time.monotonic()
            if now > give_up_at:
                open_kinds = Counter(key.data.kind for key in selector.get_map().values())
                raise AssertionError(f"still open after {bound_s}s: {dict(open_kinds)}")
            if now >= next_trickle:
                next_trickle = now + TRICKLE_EVERY_S
                _trickle_one_byte(key.data for key in selector.get_map().values())
            for key, _events in selector.select(timeout=TRICKLE_EVERY_S):
                slow = key.data
                try:
                    chunk = slow.sock.recv(4096)
                except ConnectionResetError:
                    slow.reset, chunk = True, b""
                if chunk:
                    slow.received += chunk
                else:
                    selector.unregister(slow.sock)
                    slow.sock.close()
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()


def _trickle_one_byte(slows: Iterator[_Slow]) -> None:
    for slow in slows:
        if slow.trickle and not slow.send_failed:
            try:
                slow.sock.send(slow.trickle[:1])
            except OSError:  # closed by the server in the meantime: reading tells how
                slow.send_failed = True
            slow.trickle = slow.trickle[1:]


def _open_attack(port: int) -> list[_Slow]:
    """Hundreds of connections that send nothing, half a request line, or a head too slowly."""
    slows: list[_Slow] = []
    kinds = ("silent", "half_line", "trickled")
    for index in range(SLOW_PER_KIND * len(kinds)):
        kind = kinds[index % len(kinds)]
        sock = _connect_from(ATTACK_ADDRESSES[index % 3], port)
        if kind == "half_line":
            sock.sendall(b"GET /healthz HT")
        elif kind == "trickled":
            sock.sendall(HEAD_START)
        slows.append(_Slow(sock, kind, trickle=ENDLESS_HEADER if kind == "trickled" else b""))
    for index in range(FEW):
        sock = _connect_from(ATTACK_ADDRESSES[index % 3], port)
        slows.append(_Slow(sock, "blank_lines", trickle=b"\r\n" * 1000))
        slow_body = _connect_from(ATTACK_ADDRESSES[index % 3], port)
        slow_body.sendall(HALF_A_BODY)
        slows.append(_Slow(slow_body, "slow_body"))
        oversized = _connect_from(ATTACK_ADDRESSES[index % 3], port)
        oversized.sendall(HEAD_START + b"X-Pad: " + b"a" * 70_000)
        slows.append(_Slow(oversized, "oversized"))
    for index in range(FEW):
        sock = _connect_from(ATTACK_ADDRESSES[index % 3], port)
        response = _response_to(sock, HEALTHZ)
        assert response.startswith(OK), "a plain request must be served"
        slows.append(_Slow(sock, "kept_alive", received=response))
    return slows


@pytest.fixture
def quick_timeouts(tmp_path: Path) -> Iterator[Platform]:
    platform = start_platform(
        tmp_path,
        extra_env={
            "HUBBUB_HTTP_IDLE_TIMEOUT_S": "1",
            "HUBBUB_HTTP_HEADER_TIMEOUT_S": "1",
            "HUBBUB_HTTP_BODY_TIMEOUT_S": "1",
        },
    )
    try:
        yield platform
    finally:
        platform.stop()


def _inbox_device(platform: Platform, login: Login) -> Device:
    device = Device.for_login(platform, login, transport="websockets")
    assert device.connect() == 0
    assert device.subscribe(f"user/{login.user_id}/inbox") == [1]
    return device


def _acked(client: HubbubClient, sent: Pending) -> dict[str, Any]:
    """The ack of ``sent`` (a resend under load may bring an earlier message's ack again)."""
    return expect_event(client, "ack", lambda event: event["cmid"] == sent.cmid)


def _next_text(device: Device) -> str:
    """The text of the next chat message in the device's inbox (other events skipped)."""
    while True:
        event = json.loads(device.next_message().payload)
        if event["kind"] == "message":
            return str(event["text"])


def test_slow_and_idle_sockets_are_closed_on_time_while_devices_chat(quick_timeouts: Platform) -> None:
    platform = quick_timeouts
    api = ApiClient(platform.http_url)
    bob = api.new_user("bob")
    bob_web = _inbox_device(platform, bob)  # MQTT over WebSocket, on the attacked port
    try:
        slows = _open_attack(_port_of(platform))
        attack = ThreadPoolExecutor(1).submit(_read_until_all_closed, slows, WAIT_S)
        # Meanwhile a real device logs in over REST and chats over MQTT.
        with client_factory(platform.http_url) as make:
            alice = make()
            cid = alice.request("POST", "/v1/conversations", json={"type": "direct", "user_id": bob.user_id})
            assert cid.status_code == 201, cid.text
            sent = alice.send(cid.json()["id"], "during the attack")
            assert _acked(alice, sent)["seq"] == 1
            assert _next_text(bob_web) == "during the attack"

            attack.result(timeout=WAIT_S)
            closed_with = {(slow.kind, slow.received.split(b"\r\n", 1)[0]) for slow in slows}
            assert closed_with == {
                ("silent", b""),  # idle: closed without a word, as keep-alive allows
                ("half_line", TIMED_OUT),
                ("trickled", TIMED_OUT),
                ("kept_alive", OK),
                ("blank_lines", b""),  # blank lines begin no request: the idle deadline stands
                ("oversized", HEAD_TOO_LARGE),
                ("slow_body", TIMED_OUT),
            }, [(s.kind, s.received[:40], s.reset) for s in slows]

            # The WebSocket, older than both timeouts, was not cut: MQTT keeps its own keepalive.
            alice.send(cid.json()["id"], "after the attack")
            assert _next_text(bob_web) == "after the attack"
            assert not bob_web.disconnected.is_set()
    finally:
        bob_web.close()
        api.close()
    platform.stop()
    reported = _reported(platform)
    assert reported[SLOW_HEAD] == 2 * SLOW_PER_KIND, reported
    assert reported["head_too_large"] == reported["slow_body"] == FEW, reported
    assert reported[IDLE] >= SLOW_PER_KIND + 2 * FEW, reported  # and the devices' idle REST ones
    assert reported[OVER_ADDRESS_CAP] == reported[OVER_GLOBAL_CAP] == 0, reported


PER_ADDRESS = 50
EXCESS = 10
# The descriptor limit the platform runs under; by default HTTP may hold half of it.
DESCRIPTORS = 400
GLOBAL_REFUSALS = 250  # enough for more connections than the whole descriptor limit


@pytest.fixture
def few_descriptors(tmp_path: Path) -> Iterator[Platform]:
    """A platform under a low RLIMIT_NOFILE (inherited), with timeouts that never fire in the test."""
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTORS, limits[1]))
    try:
        platform = start_platform(
            tmp_path,
            extra_env={
                "HUBBUB_HTTP_IDLE_TIMEOUT_S": "300",
                "HUBBUB_HTTP_HEADER_TIMEOUT_S": "300",
                "HUBBUB_HTTP_BODY_TIMEOUT_S": "300",
                "HUBBUB_HTTP_MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS),
            },
        )
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
    try:
        yield platform
    finally:
        platform.stop()


def test_the_caps_refuse_the_excess_and_mqtt_keeps_its_descriptors(few_descriptors: Platform) -> None:
    platform = few_descriptors
    port = _port_of(platform)
    held: list[socket.socket] = []
    try:
        with client_factory(platform.http_url) as make:
            # One address may hold PER_ADDRESS connections; the next ones get 503 at once.
            answers = []
            for _ in range(PER_ADDRESS + EXCESS):
                held.append(_connect_from(ATTACK_ADDRESSES[0], port))
                answers.append(_response_to(held[-1], HEALTHZ).split(b"\r\n", 1)[0])
            assert answers == [OK] * PER_ADDRESS + [REFUSED] * EXCESS
            # ... while devices from another address log in over REST and chat over MQTT.
            alice, bob = make(), make(connect=False)
            cid = alice.request("POST", "/v1/conversations", json={"type": "direct", "user_id": bob.user_id})
            cid_id = cid.json()["id"]
            sent = alice.send(cid_id, "one address is capped")
            assert _acked(alice, sent)["seq"] == 1

            # Fill the port from many addresses until the global cap refuses GLOBAL_REFUSALS more.
            refused = 0
            addresses = iter(ATTACK_ADDRESSES[1:])
            while refused < GLOBAL_REFUSALS:
                address = next(addresses)
                for _ in range(PER_ADDRESS - 1):  # below the per-address cap: only the global one bites
                    held.append(_connect_from(address, port))
                    head = _response_to(held[-1], HEALTHZ).split(b"\r\n", 1)[0]
                    assert head in {OK, REFUSED}, head
                    refused += head == REFUSED
                    if refused == GLOBAL_REFUSALS:
                        break
            assert len(held) > DESCRIPTORS  # more than the process could hold without the caps
            # The HTTP port is full, yet a new MQTT connection is accepted and chats.
            bob.connect()
            sent = alice.send(cid_id, "the port is full")
            assert expect_event(bob, "message", lambda e: e["text"] == "the port is full")["seq"] == 2
            assert _acked(alice, sent)["seq"] == 2
    finally:
        for sock in held:
            _close_and_wait(sock)
    # Places come back as connections close.
    with ApiClient(platform.http_url).http as http:
        assert http.get("/healthz").status_code == 200
    platform.stop()
    reported = _reported(platform)
    assert reported[OVER_ADDRESS_CAP] == EXCESS, reported
    assert reported[OVER_GLOBAL_CAP] == GLOBAL_REFUSALS, reported
