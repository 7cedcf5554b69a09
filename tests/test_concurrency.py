"""The global cap on concurrent SNMP requests holds across targets."""

from __future__ import annotations

import asyncio
import time

import pytest

from poller.errors import DeviceTimeoutError
from poller.snmp.auth import SnmpAuth
from poller.snmp.transport import GufoTransport
from poller.snmp.wire import WireTransport
from tests.peers import UdpResponder

pytestmark = pytest.mark.integration


async def four_silent_requests(
    port: int, cap: int, kind: type[GufoTransport | WireTransport]
) -> tuple[float, int]:
    """Four targets each send one request that times out after 0.4 s; returns (wall, peak)."""
    semaphore = asyncio.Semaphore(cap)
    auth = SnmpAuth(protocol="snmp", community="x")
    transports = [kind("127.0.0.1", port, auth, 0.4, 0, 10, semaphore) for _ in range(4)]
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, cap - semaphore._value)  # requests currently holding a slot
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    started = time.monotonic()
    results = await asyncio.gather(
        *(t.get_many(["1.3.6.1.2.1.1.2.0"]) for t in transports), return_exceptions=True
    )
    wall = time.monotonic() - started
    watcher.cancel()
    assert all(isinstance(r, DeviceTimeoutError) for r in results), results
    return wall, peak


@pytest.mark.parametrize("kind", [GufoTransport, WireTransport])
def test_cap_serialises_requests(kind: type[GufoTransport | WireTransport]) -> None:
    with UdpResponder(None) as silent:
        capped_wall, capped_peak = asyncio.run(four_silent_requests(silent.port, 1, kind))
        free_wall, free_peak = asyncio.run(four_silent_requests(silent.port, 4, kind))
    assert capped_peak == 1
    assert free_peak == 4
    assert capped_wall >= 1.5  # 4 x 0.4 s one after another
    assert free_wall < 1.2  # all four at once
