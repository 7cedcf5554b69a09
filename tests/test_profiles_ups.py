"""RFC 1628 and APC UPS profiles against snmpsim serving the project's recordings."""

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


def test_apc_smartups_normalised(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "apc-smartups")))
    got = readings(result)
    assert result.data is not None
    assert result.data.info.profile == "apc-ups"  # detected by sysObjectID
    assert result.data.info.model == "Smart-UPS SRT 3000"
    assert got[("ups_power_source", "output", "")] == "utility"
    assert got[("battery_charge", "battery", "")] == pytest.approx(0.973)
    assert got[("battery_time_left", "battery", "")] == pytest.approx(2220)
    assert got[("ups_load", "output", "")] == pytest.approx(0.384)
    assert got[("voltage", "input", "")] == pytest.approx(229.4)
    # The probe reports Fahrenheit (iemStatusProbeTempUnits=2): 77 F is 25 C.
    assert got[("temperature", "Rack A Inlet", "")] == pytest.approx(25.0)
    assert got[("temperature", "Rack A Inlet", "high.critical")] == pytest.approx(35.0)
    assert got[("temperature", "Rack A Inlet", "low.degraded")] == pytest.approx(15.0)
    assert got[("humidity", "Rack A Inlet", "")] == pytest.approx(0.41)
    assert got[("status", "Rack A Door", "contact")] == "degraded"
    # The disconnected probe ("Unknown", status 1) is omitted, not exported as 0 or -1.
    assert not [k for k in got if k[1].startswith("Unknown")]


def test_rfc1628_detected_by_presence(snmpsim: SnmpSim) -> None:
    # The card reports net-snmp's generic sysObjectID: recognised by the UPS-MIB subtree.
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "rfc1628-ups")))
    got = readings(result)
    assert result.data is not None and result.data.info.profile == "rfc1628-ups"
    assert result.data.info.vendor == "RPS SpA"
    assert got[("battery_time_left", "battery", "")] == 48 * 60
    assert got[("battery_charge", "battery", "")] == pytest.approx(1.0)
    assert got[("ups_power_source", "output", "")] == "utility"
    assert got[("ups_load", "output", "")] == pytest.approx(0.42)
    assert got[("temperature", "battery", "")] == 29
    assert ("voltage", "input", "") in got
    # Battery current -1 means "not available": there is no current metric, and no -1 leaks.
    assert all(v != -1 for v in got.values())


def test_rfc1628_without_ident_group(snmpsim: SnmpSim) -> None:
    # An agent (ABB) that serves the whole UPS-MIB but upsIdent is still recognised; the
    # 0xFFFF minutes filler and a 0 C battery temperature (no sensor) are omitted.
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "rfc1628-ups-noident")))
    got = readings(result)
    assert result.data is not None and result.data.info.profile == "rfc1628-ups"
    assert got[("battery_charge", "battery", "")] == pytest.approx(1.0)
    assert got[("ups_power_source", "output", "")] == "utility"
    assert ("battery_time_left", "battery", "") not in got
    assert ("temperature", "battery", "") not in got


def test_vendor_profile_supersedes_rfc1628(snmpsim: SnmpSim) -> None:
    # A CyberPower card answers UPS-MIB too: both apply, the vendor MIB's readings win and
    # nothing is exported twice.
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "cyberpower-ups")))
    assert result.data is not None
    assert dict(result.data.sources) == {"cyberpower-ups": 22, "rfc1628-ups": 0}
    got = readings(result)
    # ENVIROSENSOR reports tenths of a degree Fahrenheit: 77.0 F is 25 C.
    assert got[("temperature", "environment", "")] == pytest.approx(25.0)
    assert got[("leak", "Water Sensor", "")] == 1
    assert got[("ups_power_source", "output", "")] == "battery"
    assert got[("status", "input", "power_supply")] == "degraded"  # blackout
