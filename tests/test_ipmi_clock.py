"""IPMI on a freshly booted poller host: the monotonic clock starts near 0, and the driver
must still read thresholds on its first poll (issue 9 item 5: "IPMI is blind for 10 minutes
after the poller's host boots")."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from poller.driver import DriverContext, PollSpec
from poller.ipmi import driver as ipmi_driver
from poller.ipmi import sdr as ipmi_sdr
from poller.ipmi.driver import THRESHOLD_REFRESH, IpmiDriver
from poller.profiles import load_profiles
from poller.scheduler import TargetRunner
from poller.store import Store
from tests.ipmisim import IpmiSim, ipmi_config
from tests.util import readings

pytestmark = pytest.mark.integration


class FreshBootClock:
    """A monotonic clock that reads `start` seconds now (a host just booted) and then runs at
    real speed; `jump` moves it forward as if that much time had passed."""

    def __init__(self, start: float = 5.0) -> None:
        self._offset = start - time.monotonic()

    def monotonic(self) -> float:
        return time.monotonic() + self._offset

    def jump(self, seconds: float) -> None:
        self._offset += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FreshBootClock:
    """The IPMI driver's view of time.monotonic starts at 5 s (asyncio's own is untouched)."""
    fake = FreshBootClock()
    monkeypatch.setattr(ipmi_driver, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


@pytest.fixture
def threshold_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of sensors whose thresholds the driver asked the BMC for, in order."""
    calls: list[str] = []
    real = ipmi_sdr.read_thresholds

    def counting(raw: Any, sensor: ipmi_sdr.SdrSensor) -> dict[Any, float]:
        calls.append(sensor.name)
        return real(raw, sensor)

    monkeypatch.setattr(ipmi_sdr, "read_thresholds", counting)
    return calls


@pytest.fixture
def sim() -> Iterator[IpmiSim]:
    """A Dell-like ipmi_sim (Fan3 stands still below its lower critical threshold)."""
    started = IpmiSim("dell").start()
    yield started
    started.stop()


def test_thresholds_read_on_first_poll_right_after_boot(
    sim: IpmiSim, clock: FreshBootClock, threshold_reads: list[str]
) -> None:
    assert clock.monotonic() < THRESHOLD_REFRESH  # the situation of the bug report
    config = ipmi_config(sim)
    target = config.targets[0]
    spec = PollSpec.from_config(config, target)
    context = DriverContext(load_profiles())
    store = Store()
    store.register(target.name, target.protocol, target.labels)
    driver = IpmiDriver(spec, context)
    runner = TargetRunner(spec, dict(target.labels), driver, store, 0, 0)

    async def polls() -> list[dict[tuple[str, str, str], float | str]]:
        try:
            got = [readings(await runner.poll_once())]
            first_reads = len(threshold_reads)
            assert first_reads > 0, "no threshold was read on the first poll"
            got.append(readings(await runner.poll_once()))
            # Within THRESHOLD_REFRESH the cached thresholds serve the second poll.
            assert len(threshold_reads) == first_reads
            clock.jump(THRESHOLD_REFRESH + 1)
            got.append(readings(await runner.poll_once()))
            assert len(threshold_reads) == 2 * first_reads  # re-read once they are old
            return got
        finally:
            await driver.close()
            context.shutdown()

    results = asyncio.run(polls())
    assert "Fan3" in threshold_reads and "Inlet Temp" in threshold_reads
    for got in results:
        assert got[("temperature", "Inlet Temp", "high.critical")] == 42
        assert got[("fan_speed", "Fan3", "low.critical")] == 360
        # Fan3 reads 0 RPM, below its lower critical limit: failed from the first poll on.
        assert got[("fan_speed", "Fan3", "")] == 0
        assert got[("status", "Fan3", "fan")] == "failed"
        assert got[("status", "Fan1", "fan")] == "ok"
