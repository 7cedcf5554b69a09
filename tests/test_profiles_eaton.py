"""Eaton XUPS-MIB with Environmental Monitoring Probe against snmpsim."""

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


def test_eaton_xups_with_emp(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "eaton-9px-emp")))
    got = readings(result)
    assert result.data is not None
    # The card answers RFC 1628 too; the sysObjectID picks the richer vendor profile.
    assert result.data.info.profile == "eaton-xups"
    assert result.data.info.model == "Eaton 9PX 2200i RT 2U"
    assert got[("ups_power_source", "output", "")] == "utility"
    assert got[("battery_time_left", "battery", "")] == 2460
    assert got[("battery_charge", "battery", "")] == pytest.approx(1.0)
    assert got[("ups_load", "output", "")] == pytest.approx(0.34)
    assert got[("voltage", "input", "")] == 231
    assert got[("power", "output", "")] == 612
    assert got[("status", "battery", "battery")] == "ok"
    # EMP remote probe with its limits.
    assert got[("temperature", "EMP", "")] == 27
    assert got[("temperature", "EMP", "high.degraded")] == 35
    assert got[("humidity", "EMP", "")] == pytest.approx(0.36)
    assert got[("humidity", "EMP", "low.degraded")] == pytest.approx(0.10)
    # A normally-open water contact that is closed: water detected.
    assert got[("leak", "Water Sensor UPS Room", "")] == 1
    assert got[("status", "Server Room Door", "contact")] == "ok"
    assert not [k for k in got if k[1] == "EMP Input 3"]  # notUsed
    # No ambient sensor on the card itself: absent, not 0.
    assert ("temperature", "UPS ambient", "") not in got
