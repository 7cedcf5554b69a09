"""Time sentinels on a freshly booted host: "never" must not look like "recently" when the
monotonic clock starts near 0 (issue 9 item 5). The IPMI case is in test_ipmi_clock.py."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from pydantic import SecretStr

from poller.errors import DeviceTimeoutError
from poller.simulator import room as room_module
from poller.simulator.room import SimulatedRoom
from poller.snmp import transport as snmp_transport
from poller.snmp.auth import SnmpAuth
from poller.snmp.profile import SYS_OBJECT_ID
from poller.snmp.transport import GufoTransport
from tests.peers import V3_AUTH, V3_PRIV, V3_USER, Snmpd

pytestmark = pytest.mark.integration


def fresh_boot_clock(start: float = 5.0) -> SimpleNamespace:
    """A stand-in for the time module whose monotonic clock reads `start` seconds now."""
    offset = start - time.monotonic()
    return SimpleNamespace(monotonic=lambda: time.monotonic() + offset, time=time.time)


def test_snmpv3_engine_discovered_after_a_failed_first_try_right_after_boot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The agent is down when the poller starts (a UPS card still booting after the same
    # power cut): the first engine discovery times out, and the session is kept. When the
    # agent comes up, the next request must discover the engine first. With a 0.0 "last
    # used" sentinel and a clock below V3_REFRESH_AFTER, the session looked fresh and was
    # used without an engine id.
    clock = fresh_boot_clock()
    monkeypatch.setattr(snmp_transport, "time", clock)
    assert clock.monotonic() < snmp_transport.V3_REFRESH_AFTER
    agent = Snmpd()
    auth = SnmpAuth(
        protocol="snmp",
        version="3",
        username=V3_USER,
        security_level="authPriv",
        auth_protocol="SHA256",
        auth_password=SecretStr(V3_AUTH),
        priv_protocol="AES",
        priv_password=SecretStr(V3_PRIV),
    )

    async def go() -> dict[str, object]:
        transport = GufoTransport("127.0.0.1", agent.port, auth, 0.5, 0, 10, asyncio.Semaphore(4))
        try:
            with pytest.raises(DeviceTimeoutError):
                await transport.get_many([SYS_OBJECT_ID])
            await asyncio.to_thread(agent.start)
            return dict(await transport.get_many([SYS_OBJECT_ID]))
        finally:
            transport.close()

    try:
        got = asyncio.run(asyncio.wait_for(go(), 30))
    finally:
        agent.stop()
    assert SYS_OBJECT_ID in got


def test_room_scenario_clock_is_zero_until_started(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before start() the room's scenario time must be 0, not "seconds since the host booted
    # times the speed-up" (a 0.0 start sentinel made it depend on the host's uptime).
    monkeypatch.setattr(room_module, "time", fresh_boot_clock(5.0))
    room = SimulatedRoom("quiet", speed=60.0)
    assert room.now == 0.0
