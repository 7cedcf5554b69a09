"""Session-wide real peers for the tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from poller.simulator.snmpsim import RECORDINGS, SnmpSim

TEST_RECORDINGS = Path(__file__).parent / "fixtures" / "snmprec"


@pytest.fixture(scope="session")
def snmpsim() -> Iterator[SnmpSim]:
    """One snmpsim serving every project recording (community = file name)."""
    sim = SnmpSim(data_dirs=[RECORDINGS, TEST_RECORDINGS])
    sim.start()
    yield sim
    sim.stop()
