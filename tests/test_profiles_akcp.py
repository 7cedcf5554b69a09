"""AKCP sensorProbe (SPAGENT-MIB) profile against snmpsim."""

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


def test_akcp_sensorprobe(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "akcp-sensorprobe")))
    got = readings(result)
    assert result.data is not None and result.data.info.profile == "akcp-sensorprobe"
    assert result.data.info.vendor == "AKCP"
    # Raw tenths in Celsius.
    assert got[("temperature", "Rack 1 Front", "")] == pytest.approx(21.8)
    assert got[("temperature", "Rack 1 Front", "high.critical")] == 32
    # A port set to Fahrenheit: 79.2 F is 26.2 C; whole-degree thresholds converted too.
    assert got[("temperature", "Closet Ambient", "")] == pytest.approx(26.2222, abs=1e-3)
    assert got[("temperature", "Closet Ambient", "high.degraded")] == pytest.approx(25.0)
    assert got[("status", "Closet Ambient", "temperature")] == "degraded"
    assert got[("humidity", "Rack 1 Front", "")] == pytest.approx(0.47)
    assert got[("humidity", "Rack 1 Front", "low.critical")] == pytest.approx(0.15)
    # The water sensor in critical state.
    assert got[("leak", "Water Under Rack 1", "")] == 1
    assert got[("status", "Water Under Rack 1", "leak")] == "failed"
    assert got[("status", "UPS On Battery", "contact")] == "ok"
    # A port with an empty description is named by its index.
    assert got[("status", "2", "contact")] == "ok"
    # Offline rows (temperature 2, humidity 1, switch 3) and an output relay are omitted.
    names = {k[1] for k in got}
    assert not names & {
        "Temperature3 Description",
        "Humidity2 Description",
        "Dry Contact Switch4 Description",
        "Siren",
    }
