"""Redfish sessions, basic auth, $expand and secrets against the simulator's Redfish BMC
(aiohttp.web: POST Sessions -> X-Auth-Token, DELETE to log out, 401 when a token expires),
which sushy-static cannot express (it accepts anything and issues no token)."""

from __future__ import annotations

import asyncio
import json
import logging
import types
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from poller.driver import DriverContext, PollSpec
from poller.errors import AuthError
from poller.exporter import exposition
from poller.http import HttpServer
from poller.profiles import load_profiles
from poller.redfish.driver import RedfishDriver
from poller.scheduler import TargetRunner
from poller.simulator import redfish_bmc
from poller.simulator.model import RoomModel, Server
from poller.simulator.redfish_bmc import RedfishBmc, bind_tcp, start_redfish_bmc
from poller.store import Store
from tests.redfish_peers import free_tcp_port
from tests.test_redfish import redfish_config
from tests.util import readings

pytestmark = pytest.mark.integration

PASSWORD = "sim-redfish-pw"  # noqa: S105 - the simulator's account
CANARY_PASSWORD = "rf-pass-CANARY-5d1e"  # noqa: S105 - planted to be searched for
CANARY_TOKEN = "rf-token-CANARY-c07a"  # noqa: S105
WRONG = "not-the-password"


@asynccontextmanager
async def bmc(vendor: str = "dell", **options: bool) -> AsyncIterator[tuple[RedfishBmc, str]]:
    """One simulated server's Redfish service on a free loopback port."""
    room = RoomModel([Server("t-1", "A", vendor, inlet_offset=0.5, load=0.4)], [])
    room.advance(5.0)
    sock = bind_tcp("127.0.0.1")
    service, runner = await start_redfish_bmc(room, room.servers["t-1"], sock, **options)
    try:
        yield service, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


def driver(address: str, password: str = PASSWORD, **options: Any) -> RedfishDriver:
    """A driver for the simulator's `monitor` account."""
    config = redfish_config(address, options=options or None, password=password)
    return RedfishDriver(
        PollSpec.from_config(config, config.targets[0]), DriverContext(load_profiles())
    )


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def test_session_reused_relogin_on_401_and_deleted_on_close() -> None:
    async def scenario() -> None:
        async with bmc(basic=False) as (service, address):
            rf = driver(address)
            data = await rf.poll()
            await rf.poll()
            assert (service.logins, rf.logins, rf.has_session) == (1, 1, True)
            assert len(service.tokens) == 1
            inlet = next(
                r for r in data.readings if r.sensor.endswith("Inlet Temp") and not r.limit_type
            )
            assert inlet.location is not None and inlet.location.value == "inlet"
            assert inlet.value == pytest.approx(round(service.server.inlet, 1), abs=0.5)
            assert data.info.vendor == "Dell" and data.info.profile == "redfish-dell"
            assert data.info.firmware == "7.00.00.171"
            service.tokens.clear()  # the BMC restarted / the session timed out
            await rf.poll()
            assert (service.logins, len(service.tokens)) == (2, 1)
            await rf.close()
            assert service.tokens == {}  # DELETEd

    run(scenario)


def test_basic_auth_when_there_is_no_session_service() -> None:
    async def scenario() -> None:
        async with bmc("supermicro", sessions=False) as (service, address):
            rf = driver(address)
            data = await rf.poll()
            assert (service.logins, rf.has_session) == (0, False)
            assert data.info.profile == "redfish-supermicro"
            # Supermicro gives no PhysicalContext: the profile's name rule places the inlet.
            inlet = next(
                r for r in data.readings if r.sensor.endswith("Inlet Temp") and not r.limit_type
            )
            assert inlet.location is not None and inlet.location.value == "inlet"
            await rf.close()

    run(scenario)


def test_wrong_password_is_auth_and_one_login_per_poll() -> None:
    async def scenario() -> None:
        async with bmc(basic=False) as (service, address):
            rf = driver(address, password=WRONG)
            for _ in range(3):
                with pytest.raises(AuthError, match="rejected user 'monitor'"):
                    await rf.poll()
            assert service.logins == 3  # never retried within a poll
            await rf.close()
        async with bmc(sessions=False) as (service, address):
            rf = driver(address, password=WRONG)
            with pytest.raises(AuthError, match="refused the credentials"):
                await rf.poll()
            await rf.close()

    run(scenario)


def test_expand_saves_requests() -> None:
    counts: dict[bool, list[int]] = {}

    async def scenario() -> None:
        async with bmc() as (service, address):
            for expand in (True, False):
                rf = driver(address, expand=expand)
                counts[expand] = []
                for _ in range(2):
                    await rf.poll()
                    counts[expand].append(rf.requests_last_poll)
                await rf.close()
            assert service.requests > 0

    run(scenario)
    with_expand, without = counts[True], counts[False]
    # Chassis, Fans, LeakDetectors, PowerSupplies and Sensors each in one request.
    assert with_expand[1] < without[1], counts
    assert with_expand[1] <= 10, counts
    print(f"requests per warm poll: with $expand {with_expand[1]}, without {without[1]}")


def test_canary_secrets_never_leave(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unique password and session token: absent from logs, metrics, /api/room, the
    status page and every error message, through success, expiry and a rejected login."""
    fake = types.SimpleNamespace(
        token_hex=lambda n: "abcd" * (n // 2), token_urlsafe=lambda n: CANARY_TOKEN
    )
    monkeypatch.setattr(redfish_bmc, "secrets", fake)
    caplog.set_level(logging.DEBUG)
    messages: list[str] = []
    store = Store()

    async def scenario() -> None:
        async with bmc(basic=False) as (service, address):
            service.users = {"monitor": CANARY_PASSWORD}
            config = redfish_config(address, password=CANARY_PASSWORD)
            target = config.targets[0]
            spec = PollSpec.from_config(config, target)
            store.register(target.name, target.protocol, target.labels)
            rf = RedfishDriver(spec, DriverContext(load_profiles()))
            runner = TargetRunner(spec, dict(target.labels), rf, store, 0, 0)
            first = await runner.poll_once()
            assert first.success and rf.has_session, first.message
            service.tokens.clear()
            service.users = {"monitor": "changed"}  # expiry, then the login is refused
            failed = await runner.poll_once()
            assert (failed.success, failed.reason) == (False, "auth")
            messages.extend([first.message, failed.message, repr(spec), repr(config)])
            await rf.close()

    run(scenario)
    server = HttpServer(f"127.0.0.1:{free_tcp_port()}", store, exposition)
    server.start()
    try:
        pages = []
        for path in ("/metrics", "/api/room", "/"):
            url = f"http://127.0.0.1:{server.port}{path}"
            with urllib.request.urlopen(url, timeout=5) as rsp:
                pages.append(rsp.read().decode())
    finally:
        server.stop()
    assert 'hwpoller_up{device="rf-1",protocol="redfish"' in pages[0]
    assert json.loads(pages[1])["rooms"]
    outputs = [*messages, *pages, caplog.text, exposition(store).decode()]
    for secret in (CANARY_PASSWORD, CANARY_TOKEN):
        for text in outputs:
            assert secret not in text


def test_simulated_room_serves_redfish_beside_ipmi() -> None:
    import yaml

    from poller.config import parse_config
    from poller.simulator.room import RoomThread
    from tests.util import poll_once

    with RoomThread(redfish=True) as room:
        config = room.config()
        protocols = {t["protocol"] for t in config["targets"]}
        assert protocols == {"snmp", "ipmi", "redfish"}
        redfish = [t for t in config["targets"] if t["protocol"] == "redfish"]
        assert len(redfish) == 6
        web = next(t for t in redfish if t["name"] == "web-1-redfish")
        doc = {**config, "targets": [web]}
        parsed = parse_config(yaml.safe_dump(doc), "<room>")
        result = asyncio.run(poll_once(parsed))
    got = readings(result)
    inlet = next(k for k in got if k[0] == "temperature" and k[1].endswith("Inlet Temp"))
    assert 10 < float(got[inlet]) < 40
    assert (
        got[("leak", "Chassis floor leak detector", "")] == 0
    )  # rack A's rope, dry in the quiet room
    assert result.data is not None and result.data.info.protocol == "redfish"
