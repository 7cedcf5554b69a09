"""APC NetBotz (NETBOTZV2-MIB) profile against snmpsim."""

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


def test_netbotz_v2(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "netbotz")))
    got = readings(result)
    assert result.data is not None and result.data.info.profile == "netbotz"
    assert got[("temperature", "Temperature (Row C Cold Aisle)", "")] == pytest.approx(22.4)
    assert got[("humidity", "Humidity (Row C Cold Aisle)", "")] == pytest.approx(0.452)
    assert got[("status", "Temperature (Row C Hot Aisle)", "temperature")] == "degraded"
    # Dew point is a temperature at location "other", never an air temperature.
    dew = next(r for r in result.data.readings if r.sensor.startswith("Dew Point"))
    assert (dew.quantity, dew.location, dew.value) == ("temperature", "other", pytest.approx(9.8))
    # Airflow has no metric of its own: its alert state is a cooling status.
    assert got[("status", "Air Flow (Row C Floor Tile)", "cooling")] == "ok"
    # The tripped leak rope and the dry spot sensor.
    assert got[("leak", "Leak Rope (Row C Under Floor)", "")] == 1
    assert got[("status", "Leak Rope (Row C Under Floor)", "leak")] == "failed"
    assert got[("leak", "Spot Leak (CRAC 2 Drip Tray)", "")] == 0
    assert got[("status", "Smoke (Row C)", "contact")] == "ok"
    # Unplugged temperature port and a null dry contact are omitted.
    names = {k[1] for k in got}
    assert "Temperature (Sensor Port 3)" not in names
    assert "Dry Contact (Port D2)" not in names
    locations = {r.sensor: r.location for r in result.data.readings if r.location}
    assert locations["Temperature (Row C Cold Aisle)"] == "inlet"
    assert locations["Temperature (Row C Hot Aisle)"] == "exhaust"
