"""TargetRunner.poll_soon: the re-poll a notification asks for, rate-limited, one in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import yaml

from poller.config import parse_config
from poller.driver import PollSpec
from poller.model import DeviceData, DeviceInfo, Quantity, Reading
from poller.scheduler import EXTRA_POLL_GAP, TargetRunner
from poller.store import Store


class Slow:
    """A driver whose polls take `duration` seconds and record when they ran."""

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.started: list[float] = []
        self.running = 0
        self.most = 0

    async def poll(self) -> DeviceData:
        self.started.append(time.monotonic())
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.duration)
        finally:
            self.running -= 1
        return DeviceData(DeviceInfo(), (Reading(Quantity.FAN_SPEED, "fan1", 1200.0),))

    async def close(self) -> None:
        return None


def runner(driver: Slow) -> TargetRunner:
    doc = {
        "settings": {"interval": "60s", "timeout": "5s", "jitter": 0},
        "auths": {"a": {"protocol": "snmp", "community": "c"}},
        "targets": [{"name": "t", "address": "127.0.0.1", "protocol": "snmp", "auth": "a"}],
    }
    config = parse_config(yaml.safe_dump(doc))
    store = Store()
    store.register("t", "snmp", {})
    spec = PollSpec.from_config(config, config.targets[0])
    return TargetRunner(spec, {}, driver, store, 0, 300)  # type: ignore[arg-type]


async def _until(check: Callable[[], bool]) -> None:
    """Wait (at most 5 s: the machine may be busy) for a condition."""
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def test_poll_soon_polls_at_once_then_rate_limits() -> None:
    driver = Slow(0.05)
    target = runner(driver)

    async def go() -> None:
        task = asyncio.create_task(target.run(first_delay=0))
        await _until(lambda: len(driver.started) == 1)  # the scheduled first poll
        await asyncio.sleep(0.2)
        asked = time.monotonic()
        assert target.poll_soon()
        await _until(lambda: len(driver.started) == 2)
        assert driver.started[1] - asked < 0.5  # not 60s later
        # A second request within the gap is refused and starts nothing.
        assert not target.poll_soon()
        await asyncio.sleep(0.5)
        assert len(driver.started) == 2
        # After the gap, one more.
        await asyncio.sleep(EXTRA_POLL_GAP)
        assert target.poll_soon()
        await _until(lambda: len(driver.started) == 3)
        target.stopping = True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())


def test_poll_soon_during_a_poll_waits_for_it() -> None:
    driver = Slow(1.0)
    target = runner(driver)

    async def go() -> None:
        task = asyncio.create_task(target.run(first_delay=0))
        await _until(lambda: driver.running == 1)
        assert target.poll_soon()  # while the first poll is in flight
        await _until(lambda: len(driver.started) == 2)
        # The extra poll began after the first ended, never beside it.
        assert driver.most == 1
        assert driver.started[1] - driver.started[0] >= 1.0
        await asyncio.sleep(1.5)
        assert len(driver.started) == 2  # one extra poll, then back to the 60s schedule
        target.stopping = True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())


def test_poll_soon_is_refused_once_stopping() -> None:
    target = runner(Slow(0.01))
    target.stopping = True
    assert not target.poll_soon()
