"""Answers that arrive after their request timed out: the next request on the socket must
skip them (they carry an old request id) and still get its own answer, whatever the
event-loop bookkeeping of the socket in between."""

from __future__ import annotations

import asyncio

import pytest

from poller.driver import DriverContext, PollSpec
from poller.profiles import load_profiles
from poller.snmp.driver import SnmpDriver
from tests.conftest import SnmpSim
from tests.hostile import HostilePeer
from tests.util import snmp_config

pytestmark = pytest.mark.integration


class LateEvery(HostilePeer):
    """Proxies the real agent, but every `period`-th answer comes `delay` s late."""

    kind = "late"

    def __init__(self, upstream: tuple[str, int], period: int, delay: float) -> None:
        super().__init__(upstream)
        self.period, self.delay, self.answers, self.late = period, delay, 0, 0

    def distort(self, request: bytes, answer: bytes) -> list[tuple[float, bytes]]:
        self.answers += 1
        if self.answers % self.period:
            return [(0.0, answer)]
        self.late += 1
        return [(self.delay, answer)]


def test_late_answers_are_skipped_and_polls_recover(snmpsim: SnmpSim) -> None:
    # Requests time out after 0.8 s (3 s poll deadline, 2 retries); every 5th answer comes
    # after 1.2 s, while the retry's answer is awaited or while the target is idle.
    with LateEvery((snmpsim.host, snmpsim.port), period=5, delay=1.2) as peer:
        config = snmp_config(peer.port, "apc-smartups", timeout="3s", retries=2)
        spec = PollSpec.from_config(config, config.targets[0])
        driver = SnmpDriver(spec, DriverContext(load_profiles()))

        async def polls() -> list[int]:
            counts = []
            for _ in range(6):
                data = await driver.poll()
                assert not data.partial_errors, data.partial_errors
                counts.append(len(data.readings))
                # Idle while a late answer lands: nobody waits for it then.
                await asyncio.sleep(0.5)
            await driver.close()
            return counts

        counts = asyncio.run(polls())
    assert len(set(counts)) == 1  # every poll read everything
    assert counts[0] > 10
    assert peer.late >= 6  # and so did that many late answers
