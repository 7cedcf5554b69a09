"""Generic ENTITY-SENSOR-MIB fallback profile against snmpsim."""

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


def test_entity_sensor(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "entity-sensor")))
    got = readings(result)
    assert result.data is not None
    assert result.data.info.profile == "entity-sensor"  # unknown sysObjectID, ENTITY-MIB answers
    # Precision 1: 231 is 23.1 C; scale milli: 34500 is 34.5 C.
    assert got[("temperature", "Inlet Temperature", "")] == pytest.approx(23.1)
    assert got[("temperature", "Outlet Temperature", "")] == pytest.approx(34.5)
    assert got[("humidity", "Humidity", "")] == pytest.approx(0.41)
    assert got[("fan_speed", "Fan 1", "")] == 5400
    assert got[("voltage", "Input Voltage", "")] == pytest.approx(230.4)
    assert ("temperature", "Probe 2 Temperature", "") not in got  # unavailable(2)
    locations = {r.sensor: r.location for r in result.data.readings if r.location}
    assert locations["Inlet Temperature"] == "inlet"
    assert locations["Outlet Temperature"] == "exhaust"
