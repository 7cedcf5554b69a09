"""APC PowerNet environmental and cooling profiles (EMU, universal I/O, NetBotz via PowerNet,
InRow) against snmpsim serving the project's recordings."""

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


def test_apc_emu(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "apc-emu")))
    got = readings(result)
    assert result.data is not None
    assert result.data.info.profile == "apc-emu"  # sysObjectID 318.1.3.8.4
    assert result.data.info.model == "AP9340"
    # emsStatusSysTempUnits is Fahrenheit: 77 F is 25 C, thresholds converted too.
    assert got[("temperature", "Rack 3 Inlet", "")] == pytest.approx(25.0)
    assert got[("temperature", "Rack 3 Inlet", "high.critical")] == pytest.approx(35.0)
    assert got[("temperature", "Rack 3 Inlet", "low.degraded")] == pytest.approx(15.0)
    assert got[("humidity", "Rack 3 Inlet", "")] == pytest.approx(0.45)
    # A temperature-only probe reports humidity 0 / -1: no humidity series for it.
    assert ("humidity", "CRAC Supply", "") not in got
    assert ("humidity", "Hot Aisle Exhaust", "") not in got
    # Probe states come from memSensors: apc-mem supersedes apc-ems for the kinds it reads
    # (on real cards both tables list the same probes), so the exhaust probe's ems alarm bit
    # map is not exported a second time; mem's own probe state is.
    assert ("status", "Hot Aisle Exhaust", "temperature") not in got
    assert got[("status", "Room Ambient", "temperature")] == "ok"
    # memSensors, also in Fahrenheit.
    assert got[("temperature", "Room Ambient", "")] == pytest.approx(23.3333, abs=1e-3)
    # The tripped leak rope on a dry-contact input is a leak, and a failed leak status.
    assert got[("leak", "Under Floor Leak Rope", "")] == 1
    assert got[("status", "Under Floor Leak Rope", "leak")] == "failed"
    assert got[("status", "Rack 3 Door", "contact")] == "ok"
    assert ("status", "Rack 3 Door", "leak") not in got
    assert got[("leak", "CRAC Drip Tray", "")] == 0
    # Never-discovered probes ("Err"), a not-installed sensor, a disabled input and a fluid
    # sensor that lost communication are omitted.
    names = {k[1] for k in got}
    assert not names & {"Err", "Temp Sensor MM:2", "Input MM:4", "Fluid Sensor 2"}
    locations = {r.sensor: r.location for r in result.data.readings if r.location}
    assert locations["Rack 3 Inlet"] == "inlet"
    assert locations["CRAC Supply"] == "supply"
    assert locations["Hot Aisle Exhaust"] == "exhaust"
    assert locations["Under Floor Leak Rope"] == "floor"


def test_apc_ups_universal_io(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "apc-smartups-uio")))
    got = readings(result)
    assert result.data is not None and result.data.info.profile == "apc-ups"
    assert got[("temperature", "Rack B2 Front", "")] == 22
    assert got[("temperature", "Rack B2 Front", "high.critical")] == 32
    assert got[("humidity", "Rack B2 Front", "")] == pytest.approx(0.41)
    assert got[("status", "Rack B2 Rear", "temperature")] == "degraded"
    assert ("humidity", "Rack B2 Rear", "") not in got  # temperature-only sensor: -1
    assert not [k for k in got if k[1] == "Port 2 Temp 2"]  # lost communication
    assert got[("leak", "Spot Leak UPS B2", "")] == 0
    assert got[("status", "Rack B2 Door", "contact")] == "degraded"
    assert got[("ups_power_source", "output", "")] == "utility"


def test_apc_netbotz_powernet(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "apc-netbotz-powernet")))
    got = readings(result)
    assert result.data is not None
    assert result.data.info.profile == "apc-netbotz-powernet"  # 318.1.3.8.5, longer than EMU
    assert got[("temperature", "THUM-01-B4-F", "")] == pytest.approx(23.1)
    assert got[("temperature", "THUM-01-B4-F", "high.degraded")] == pytest.approx(27.0)
    assert got[("humidity", "THUM-01-B4-F", "")] == pytest.approx(0.44)
    assert got[("status", "THUM-02-B9-F", "temperature")] == "degraded"
    # Temperature-only sensor: humidity and its -1 thresholds are not exported.
    assert ("humidity", "TEMP-03-B4-R", "") not in got
    # The "no reading" sentinel and an inactive sensor are omitted, never exported as 0.
    assert not [k for k in got if k[1] in ("Hall2-Wireless-Ext", "THUM-05-C2-F")]
    assert got[("leak", "Leak Rope Hall 2", "")] == 1
    locations = {r.sensor: r.location for r in result.data.readings if r.location}
    assert locations["THUM-01-B4-F"] == "inlet"
    assert locations["TEMP-03-B4-R"] == "exhaust"


def test_apc_inrow_cooling(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "apc-inrow-dx")))
    got = readings(result)
    assert result.data is not None and result.data.info.profile == "apc-cooling"
    # Values scaled by the per-row scale column; only the Celsius twin of each row is read.
    assert got[("temperature", "Supply Temperature", "")] == pytest.approx(18.6)
    assert got[("temperature", "Return Temperature", "")] == pytest.approx(29.2)
    assert got[("humidity", "Humidity", "")] == pytest.approx(0.412)
    assert got[("fan_speed", "Fan 2", "")] == 3455
    temps = [r for r in result.data.readings if r.quantity == "temperature"]
    assert len({r.sensor for r in temps}) == len(temps)  # no C/F duplicates
    assert ("temperature", "Superheat", "") not in got  # a difference, not a temperature
    by_sensor = {r.sensor: r.location for r in temps}
    assert by_sensor["Supply Temperature"] == "supply"
    assert by_sensor["Return Temperature"] == "return"
    assert by_sensor["Rack Inlet Temperature 1"] == "inlet"
    assert by_sensor["Dew Point Temperature"] == "other"
    # One active alarm row: the cooling unit is degraded; the airFM alarm table is absent
    # (its size does not answer), so no series claims "no alarms" for it.
    assert got[("status", "alarms", "cooling")] == "degraded"
    assert ("status", "system alarms", "cooling") not in got
