"""Server BMCs over SNMP: Dell iDRAC (IDRAC-MIB-SMIv2) and HPE iLO (CPQHLTH-MIB)."""

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


def test_dell_idrac(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "dell-idrac")))
    got = readings(result)
    assert result.data is not None and result.data.info.profile == "dell-idrac"
    assert result.data.info.model == "PowerEdge R650"
    # Tenths of a degree, with the inlet/exhaust pair located.
    inlet = "System Board Inlet Temp"
    exhaust = "System Board Exhaust Temp"
    assert got[("temperature", inlet, "")] == pytest.approx(23.6)
    assert got[("temperature", inlet, "high.critical")] == pytest.approx(47.0)
    assert got[("temperature", inlet, "high.degraded")] == pytest.approx(42.0)
    assert got[("temperature", inlet, "low.critical")] == pytest.approx(-7.0)
    assert got[("temperature", exhaust, "")] == pytest.approx(76.2)
    assert got[("status", exhaust, "temperature")] == "degraded"
    locations = {r.sensor: r.location for r in result.data.readings if r.location}
    assert locations[inlet] == "inlet"
    assert locations[exhaust] == "exhaust"
    assert locations["CPU1 Temp"] == "cpu"
    assert ("temperature", "CPU2 Temp", "") not in got  # status unknown: empty socket
    assert got[("fan_speed", "System Board Fan1A", "")] == 6840
    assert got[("fan_speed", "System Board Fan1A", "low.critical")] == 480
    # No coolingDeviceStatus column on iDRAC9: no fan status rather than a made-up one.
    assert not [k for k in got if k[2] == "fan"]
    assert got[("status", "system", "system")] == "ok"
    assert got[("status", "power supplies", "power_supply")] == "degraded"
    assert got[("status", "PS2 Status", "power_supply")] == "failed"
    assert got[("voltage", "PS1 Status input", "")] == 231
    assert ("voltage", "PS2 Status input", "") not in got  # 0: no input
    assert got[("status", "PERC1 ROMB Battery", "battery")] == "degraded"


def test_hpe_ilo(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "hpe-ilo")))
    got = readings(result)
    assert result.data is not None and result.data.info.profile == "hpe-ilo"
    assert result.data.info.model == "ProLiant DL380 Gen9"
    # Locale ambient(11) is the server's inlet; its caution threshold is high.degraded.
    assert got[("temperature", "ambient 0.1", "")] == 22
    assert got[("temperature", "ambient 0.1", "high.degraded")] == 42
    assert got[("temperature", "chassis 0.12", "high.critical")] == 75
    locations = {r.sensor: r.location for r in result.data.readings if r.location}
    assert locations["ambient 0.1"] == "inlet"
    assert locations["cpu 0.2"] == "cpu"
    # Threshold 0 is "not determined" and a -99 reading is no reading.
    assert ("temperature", "power supply 0.10", "high.degraded") not in got
    assert not [k for k in got if k[1] == "system board 0.11"]
    assert got[("status", "chassis 0.12", "temperature")] == "degraded"
    # Fan 3 is absent: omitted. Fan 2 is degraded.
    assert got[("status", "fan system 0.2", "fan")] == "degraded"
    assert not [k for k in got if k[1] == "fan system 0.3"]
    assert got[("status", "system", "system")] == "degraded"
    # Power supplies: bay 3 is absent (omitted); the failed supply has no input voltage.
    assert got[("status", "power supply 1", "power_supply")] == "ok"
    assert got[("status", "power supply 2", "power_supply")] == "failed"
    assert got[("power", "power supply 1", "")] == 212
    assert got[("voltage", "power supply 1 input", "")] == 231
    assert ("voltage", "power supply 2 input", "") not in got
    assert not [k for k in got if k[1] == "power supply 3"]
    assert got[("status", "HPE Smart Storage Battery", "battery")] == "degraded"


def test_hpe_storage(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "hpe-storage")))
    got = readings(result)
    assert result.data is not None and result.data.info.profile == "hpe-ilo"
    assert dict(result.data.sources)["hpe-storage"] > 0
    # Smart Array drives by location string.
    assert got[("temperature", "Port=1I:Box=1:Bay=1", "")] == 33
    assert got[("temperature", "Port=1I:Box=1:Bay=2", "")] == 57
    # -1: the drive cannot report a temperature; the embedded controller neither.
    assert not [k for k in got if k[1] in ("drive 3.2", "array controller slot 0")]
    assert got[("temperature", "array controller slot 3", "")] == 61
    assert got[("temperature", "cache module slot 3", "")] == 44
    assert got[("temperature", "cache capacitor slot 3", "")] == 31
    # SAS HBA drives: 0 means not available.
    assert got[("temperature", "Port 2E Box 1 Bay 1", "high.critical")] == 65
    assert not [k for k in got if k[1] == "Port 2E Box 1 Bay 2"]


def test_supermicro_bmc(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "supermicro-bmc")))
    got = readings(result)
    assert result.data is not None and result.data.info.profile == "supermicro-bmc"
    assert result.data.info.model == "SYS-2029U-TR4"
    # No type column: the IPMI name says what a sensor is; readings and thresholds are text.
    assert got[("temperature", "Inlet Temp", "")] == 21
    assert got[("temperature", "Inlet Temp", "high.critical")] == 45
    assert got[("temperature", "CPU1 Temp", "low.degraded")] == 10
    assert got[("fan_speed", "FAN2", "")] == 400  # below its lower critical threshold
    assert got[("voltage", "12V", "")] == pytest.approx(12.064)
    locations = {r.sensor: r.location for r in result.data.readings if r.location}
    assert locations["Inlet Temp"] == "inlet"
    assert locations["CPU1 Temp"] == "cpu"
    # Not installed (reading and every threshold 0) and discrete sensors are left out.
    for absent in ("DIMMB1 Temp", "FANA", "PS1 Status"):
        assert not [k for k in got if k[1] == absent], absent
    assert got[("status", "PSU 2", "power_supply")] == "failed"
    assert got[("power", "PSU 1 output", "")] == 571
    assert ("fan_speed", "PSU 1 fan 2", "") not in got  # single-fan supply


def test_cisco_cimc(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "cisco-cimc")))
    got = readings(result)
    assert result.data is not None and result.data.info.profile == "cisco-cimc"
    assert "UCS C240 M5SX" in result.data.info.firmware
    assert got[("temperature", "front", "")] == 22
    assert got[("temperature", "rear", "")] == 41
    locations = {r.sensor: r.location for r in result.data.readings if r.location}
    assert locations["front"] == "inlet"
    assert locations["rear"] == "exhaust"
    assert locations["sys/rack-unit-1/board/cpu-1/env-stats"] == "cpu"
    # 0 in a stats table is a sample not collected: no IO hub, an empty DIMM slot.
    assert not [k for k in got if k[1] in ("io hub 1", "io hub 2")]
    assert not [k for k in got if "mem-7" in k[1]]
    assert got[("status", "sys/rack-unit-1/fan-module-1-2/fan-1", "fan")] == "failed"
    assert not [k for k in got if "fan-module-1-3" in k[1]]  # presence missing(11)
    assert got[("status", "sys/rack-unit-1/psu-2", "power_supply")] == "degraded"
    assert got[("fan_speed", "sys/rack-unit-1/fan-module-1-1/fan-1/stats", "")] == 8820


def test_lenovo_xcc(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "lenovo-xcc")))
    got = readings(result)
    assert result.data is not None and result.data.info.profile == "lenovo-xcc"
    assert result.data.info.model == "ThinkSystem SR650"
    # Readings and thresholds are text; N/A is no threshold (or no reading).
    assert got[("temperature", "Ambient Temp", "")] == 23
    assert got[("temperature", "Ambient Temp", "high.critical")] == 44
    assert ("temperature", "Ambient Temp", "low.critical") not in got
    assert ("temperature", "PCH Temp", "") not in got
    assert got[("status", "Exhaust Temp", "temperature")] == "degraded"
    # A DTS sensor is a thermal margin, not a temperature.
    assert not [k for k in got if "DTS" in k[1]]
    assert got[("voltage", "SysBrd 12V", "")] == pytest.approx(12.09)
    assert got[("status", "Fan 2 Tach", "fan")] == "failed"
    assert got[("status", "system", "system")] == "degraded"  # nonCritical(4)


def test_ibm_imm(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "ibm-imm")))
    got = readings(result)
    assert result.data is not None and result.data.info.profile == "ibm-imm"  # net-snmp OID
    assert got[("temperature", "Ambient Temp", "")] == 24
    assert got[("temperature", "Ambient Temp", "high.degraded")] == 38
    assert ("temperature", "Ambient Temp", "low.critical") not in got  # 0: not set
    assert got[("voltage", "Planar 12V", "")] == pytest.approx(12.11)  # millivolts
    locations = {r.sensor: r.location for r in result.data.readings if r.location}
    assert locations["Ambient Temp"] == "inlet"


def test_dell_cmc(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "dell-cmc")))
    got = readings(result)
    assert result.data is not None and result.data.info.profile == "dell-cmc"
    assert result.data.info.model == "PowerEdge M1000e"
    assert got[("temperature", "chassis front panel", "")] == 21
    locations = {r.sensor: r.location for r in result.data.readings if r.location}
    assert locations["chassis front panel"] == "inlet"
    assert got[("status", "chassis power supplies", "power_supply")] == "degraded"
    assert got[("power", "chassis input", "")] == 3120
    assert got[("voltage", "PS-1 input", "")] == pytest.approx(232.75)
    assert not [k for k in got if k[1] == "PS-3 input"]  # absent(1)


def test_huawei_ibmc(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "huawei-ibmc")))
    got = readings(result)
    assert result.data is not None and result.data.info.profile == "huawei-ibmc"
    assert got[("temperature", "Inlet Temp", "")] == pytest.approx(23.1)  # tenths
    assert got[("temperature", "Inlet Temp", "high.degraded")] == pytest.approx(41.0)
    assert ("temperature", "Inlet Temp", "low.critical") not in got  # 65535: N/A
    assert not [k for k in got if k[1] == "CPU1 Core Rem"]  # a thermal margin
    assert got[("fan_speed_ratio", "FAN1", "")] == pytest.approx(0.45)
    assert got[("status", "FAN2", "fan")] == "failed"
    assert not [k for k in got if k[1] == "FAN3"]  # absent
    assert got[("status", "PSU2", "power_supply")] == "degraded"  # major(3)
