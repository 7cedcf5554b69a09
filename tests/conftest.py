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


# Seconds a test without a slow(...) mark is taken to need, for ordering only.
DEFAULT_SECONDS = 0.3


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks added here
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Schedule for pytest-xdist (`--dist loadgroup --no-loadscope-reorder`, see Makefile).

    A module whose tests share a module-scoped fixture (a peer it starts: snmpd, ipmi_sim,
    a hwpoller process) is one work unit, so that its peers start once, on one worker; every
    other test is a unit of its own. Units run longest first (slow(seconds) marks, others
    DEFAULT_SECONDS): a worker is handed its next unit only when it is nearly idle, so the
    long real-time tests (a Prometheus rule that needs 3 real minutes of history) start at
    once and the short ones fill the other workers around them.
    """
    units: dict[str, float] = {}
    unit_of: dict[int, str] = {}
    for item in items:
        unit = item.nodeid
        info = getattr(item, "_fixtureinfo", None)
        if info is not None and any(
            fixture.scope == "module"
            for fixtures in info.name2fixturedefs.values()
            for fixture in fixtures
        ):
            unit = item.nodeid.split("::", 1)[0]
            item.add_marker(pytest.mark.xdist_group(unit))
        mark = item.get_closest_marker("slow")
        seconds = float(mark.args[0]) if mark and mark.args else DEFAULT_SECONDS
        units[unit] = units.get(unit, 0.0) + seconds
        unit_of[id(item)] = unit
    # Stable: within a unit, and among equal units, the collection order is kept.
    items.sort(key=lambda item: -units[unit_of[id(item)]])
