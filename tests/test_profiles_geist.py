"""Geist/Vertiv Watchdog (GEIST-V4-MIB) profile against snmpsim."""

from __future__ import annotations

import asyncio

import pytest

from poller.simulator.snmpsim import SnmpSim
from tests.util import (
    poll_once,
    readings,
    snmp_config,
)

pytestmark = pytest.mark.integration


def test_geist_watchdog(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "geist-watchdog")))
    got = readings(result)
    assert result.data is not None and result.data.info.profile == "geist-watchdog"
    # The device displays Fahrenheit: 74.1 F is 23.39 C.
    assert got[("temperature", "Internal", "")] == pytest.approx(23.3889, abs=1e-3)
    assert got[("humidity", "Internal", "")] == pytest.approx(0.38)
    assert got[("temperature", "Internal dew point", "")] == pytest.approx(8.2778, abs=1e-3)
    assert got[("temperature", "Rack 2 Inlet", "")] == pytest.approx(21.2222, abs=1e-3)
    assert ("temperature", "Rack 2 Exhaust", "") not in got  # unplugged: Avail 0
    assert got[("leak", "Floor Under AC", "")] == 1
    assert got[("leak", "Floor Rack 2", "")] == 0
    locations = {(r.quantity, r.sensor): r.location for r in result.data.readings}
    assert locations[("temperature", "Rack 2 Inlet")] == "inlet"
    assert locations[("temperature", "Internal dew point")] == "other"
