"""IPMI failure handling against real peers: wrong password, silence, a BMC that restarts,
session reuse, and the security defaults (IPMI 1.5 and anonymous login refused)."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from poller.config import Config
from poller.driver import DriverContext, PollSpec
from poller.ipmi.driver import IpmiDriver
from poller.model import PollResult
from poller.profiles import load_profiles
from poller.scheduler import TargetRunner
from poller.store import Store
from tests.ipmisim import IpmiSim, free_udp_port, ipmi_config
from tests.util import poll_once, readings

pytestmark = pytest.mark.integration


@pytest.fixture
def sim() -> Iterator[IpmiSim]:
    """A Dell-like simulator of the test's own (it may be killed and restarted)."""
    started = IpmiSim("dell").start()
    yield started
    started.stop()


async def with_runner(
    config: Config, body: Callable[[TargetRunner, IpmiDriver], Awaitable[Any]]
) -> Any:
    """Run `body` with a runner whose driver persists across polls, then close it."""
    target = config.targets[0]
    spec = PollSpec.from_config(config, target)
    context = DriverContext(load_profiles())
    store = Store()
    store.register(target.name, target.protocol, target.labels)
    driver = IpmiDriver(spec, context)
    runner = TargetRunner(spec, dict(target.labels), driver, store, 0, 0)
    try:
        return await body(runner, driver)
    finally:
        await driver.close()
        context.shutdown()


def active_sessions(sim: IpmiSim) -> int:
    """Sessions open on the simulator, not counting the one ipmitool opens to ask."""
    match = re.search(r"active sessions\s*:\s*(\d+)", sim.ipmitool("session", "info", "active"))
    assert match, "ipmitool did not report the active session count"
    return int(match.group(1)) - 1


def test_session_reused_and_closed(sim: IpmiSim) -> None:
    async def body(runner: TargetRunner, driver: IpmiDriver) -> None:
        for _ in range(5):
            result = await runner.poll_once()
            assert result.success, result.message
            assert active_sessions(sim) == 1
        assert driver.logins == 1
        await driver.close()
        await asyncio.sleep(0.2)
        assert active_sessions(sim) == 0

    asyncio.run(with_runner(ipmi_config(sim), body))


def test_wrong_password_is_auth_without_retry_storm(
    sim: IpmiSim, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-password-42"
    config = ipmi_config(sim, auth={"password": wrong})

    async def body(runner: TargetRunner, driver: IpmiDriver) -> list[tuple[PollResult, float]]:
        out = []
        for _ in range(3):
            started = time.monotonic()
            out.append((await runner.poll_once(), time.monotonic() - started))
        return out

    with caplog.at_level(logging.DEBUG):
        polls = asyncio.run(with_runner(config, body))
    assert [r.reason for r, _ in polls] == ["auth", "auth", "auth"]
    # Only the first poll talks to the BMC; the next ones answer from the hold-off at once.
    assert all(elapsed < 0.5 for _, elapsed in polls[1:])
    for result, _ in polls:
        assert wrong not in result.message and sim.password not in result.message
    assert wrong not in caplog.text
    # The BMC counts the one half-open login (it expires there); a retry storm would show
    # one per poll.
    assert active_sessions(sim) <= 1


def test_auth_hold_off_counts_logins(sim: IpmiSim) -> None:
    config = ipmi_config(sim, auth={"password": "wrong-password-1"})

    async def body(runner: TargetRunner, driver: IpmiDriver) -> int:
        for _ in range(4):
            await runner.poll_once()
        return driver.logins

    assert asyncio.run(with_runner(config, body)) == 1
    assert active_sessions(sim) <= 1


def test_silent_bmc_is_timeout() -> None:
    port = free_udp_port()  # nobody listens: like a BMC that is off or filtered
    sim = IpmiSim("dell", port=port)  # never started: only used to build the config
    try:
        started = time.monotonic()
        result = asyncio.run(poll_once(ipmi_config(sim, timeout="6s", interval="10s")))
        assert result.reason == "timeout", result.message
        assert time.monotonic() - started < 15
    finally:
        sim.stop()


@pytest.mark.slow(22)
def test_reconnects_after_bmc_restart(sim: IpmiSim) -> None:
    async def body(runner: TargetRunner, driver: IpmiDriver) -> tuple[list[str], PollResult]:
        first = await runner.poll_once()
        assert first.success, first.message
        await asyncio.to_thread(sim.restart)  # SIGKILL: the BMC forgets every session
        reasons = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            result = await runner.poll_once()
            if result.success:
                return reasons, result
            reasons.append(result.reason)
            await asyncio.sleep(1)
        raise AssertionError(f"no successful poll after the restart: {reasons}")

    config = ipmi_config(sim, timeout="8s", interval="10s")
    reasons, result = asyncio.run(with_runner(config, body))
    assert set(reasons) <= {"timeout", "protocol"}, reasons
    assert readings(result)[("temperature", "Inlet Temp", "")] == 23
    assert active_sessions(sim) <= 1


class FakeV15Bmc:
    """Answers Get Channel Authentication Capabilities like an IPMI 1.5-only BMC (MD5)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.commands: list[int] = []
        self.payloads: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(1024)
            except TimeoutError:
                continue
            self.payloads.append(data)
            if len(data) < 20 or data[4] != 0x00:  # only session-less IPMI 1.5 messages
                continue
            msg = data[14:]
            self.commands.append(msg[5])
            if msg[5] != 0x38:
                continue
            # channel 1; auth types: MD5 only, no IPMI 2.0 extended data; per-message auth
            body = [0x81, 0x1C, 0, 0x20, msg[4], 0x38, 0x00, 0x01, 0x04, 0x04, 0x00, 0, 0, 0, 0]
            body[2] = -(body[0] + body[1]) & 0xFF
            body.append(-sum(body[3:]) & 0xFF)
            header = [0x06, 0x00, 0xFF, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, len(body)]
            self.sock.sendto(bytes(header + body), addr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_ipmi_v15_is_refused_before_credentials_are_sent() -> None:
    fake = FakeV15Bmc()
    sim = IpmiSim("dell", port=fake.port)
    try:
        result = asyncio.run(poll_once(ipmi_config(sim, timeout="10s")))
        assert result.reason == "unsupported", result.message
        assert "allow_ipmi_v1_5" in result.message
        # Only capability requests were sent: no session challenge carrying the user name.
        assert fake.commands and set(fake.commands) == {0x38}
        assert not [p for p in fake.payloads if sim.username.encode() in p]
    finally:
        fake.close()
        sim.stop()


def test_anonymous_login_is_refused(sim: IpmiSim) -> None:
    result = asyncio.run(poll_once(ipmi_config(sim, auth={"username": ""})))
    assert result.reason == "unsupported"
    assert "allow_anonymous" in result.message
