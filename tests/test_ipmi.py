"""IPMI polling against ipmi_sim BMCs modelled on Dell, HPE and Supermicro sensor sets.

Every expected value is also read with `ipmitool -I lanplus -C 3` from the same simulator,
so a fixture typo cannot make hwpoller and the test agree on a wrong number.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from poller.model import PollResult
from tests.ipmisim import IpmiSim, ipmi_config, ipmitool_sensors
from tests.util import (
    check_golden,
    golden_exposition,
    poll_once,
    promtool_check_metrics,
    readings,
)

pytestmark = pytest.mark.integration

VENDORS = ("dell", "hpe", "supermicro")


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, IpmiSim]]:
    """One running simulator per vendor fixture."""
    started: dict[str, IpmiSim] = {}
    try:
        for vendor in VENDORS:
            started[vendor] = IpmiSim(vendor).start()
        yield started
    finally:
        for sim in started.values():
            sim.stop()


@pytest.fixture(scope="module")
def results(sims: dict[str, IpmiSim]) -> dict[str, PollResult]:
    """One poll of each simulated BMC through the real driver and scheduler code."""
    return {v: asyncio.run(poll_once(ipmi_config(sim))) for v, sim in sims.items()}


def _ipmitool_value(sim: IpmiSim, name: str, column: str = "value") -> float:
    rows = ipmitool_sensors(sim.ipmitool("sensor"))[name]
    assert len(rows) == 1, f"{name} is not unique in ipmitool's output"
    return float(rows[0][column])


def test_dell(sims: dict[str, IpmiSim], results: dict[str, PollResult]) -> None:
    sim, result = sims["dell"], results["dell"]
    got = readings(result)
    assert result.data is not None
    info = result.data.info
    assert (info.vendor, info.profile, info.protocol, info.firmware) == (
        "Dell",
        "ipmi-dell",
        "ipmi",
        "7.10",
    )
    assert got[("temperature", "Inlet Temp", "")] == _ipmitool_value(sim, "Inlet Temp") == 23
    assert got[("temperature", "Inlet Temp", "high.critical")] == 42
    assert got[("temperature", "Inlet Temp", "high.degraded")] == 38
    assert got[("temperature", "Inlet Temp", "low.degraded")] == 3
    assert got[("temperature", "Exhaust Temp", "")] == 35
    # Both CPU sensors are called "Temp": told apart by entity id and instance.
    tool = sorted(float(r["value"]) for r in ipmitool_sensors(sim.ipmitool("sensor"))["Temp"])
    assert [got[("temperature", "Temp 3.1", "")], got[("temperature", "Temp 3.2", "")]] == tool
    locations = {
        r.sensor: r.location for r in result.data.readings if r.quantity.value == "temperature"
    }
    assert locations["Inlet Temp"] == "inlet"
    assert locations["Exhaust Temp"] == "exhaust"
    assert locations["Temp 3.1"] == locations["Temp 3.2"] == "cpu"
    assert got[("fan_speed", "Fan1", "")] == _ipmitool_value(sim, "Fan1") == 5040
    assert got[("fan_speed", "Fan1", "low.critical")] == _ipmitool_value(sim, "Fan1", "lc")
    assert got[("status", "Fan1", "fan")] == "ok"
    # Fan3 stands still below its lower critical threshold.
    assert got[("fan_speed", "Fan3", "")] == 0
    assert got[("status", "Fan3", "fan")] == "failed"
    assert got[("status", "PS1 Status", "power_supply")] == "ok"
    assert got[("status", "PS2 Status", "power_supply")] == "failed"


def test_hpe(sims: dict[str, IpmiSim], results: dict[str, PollResult]) -> None:
    sim, result = sims["hpe"], results["hpe"]
    got = readings(result)
    assert result.data is not None
    assert (result.data.info.vendor, result.data.info.profile) == ("HPE", "ipmi-hpe")
    inlet = got[("temperature", "01-Inlet Ambient", "")]
    assert inlet == _ipmitool_value(sim, "01-Inlet Ambient") == 21
    # iLO sets only upper thresholds; the non-recoverable one is not exported.
    assert got[("temperature", "01-Inlet Ambient", "high.critical")] == 42
    assert not [k for k in got if k[1] == "01-Inlet Ambient" and k[2].startswith("low")]
    assert got[("temperature", "12-Sys Exhaust", "")] == 38
    by_sensor = {r.sensor: r for r in result.data.readings if r.quantity.value == "temperature"}
    assert by_sensor["01-Inlet Ambient"].location == "inlet"
    assert by_sensor["12-Sys Exhaust"].location == "exhaust"
    assert by_sensor["02-CPU 1"].location == "cpu"
    assert by_sensor["04-P1 DIMM 1-6"].location == "other"
    # The empty CPU socket (disabled, "na" in ipmitool) and the sensor that does not answer
    # are left out entirely, never exported as 0.
    tool = ipmitool_sensors(sim.ipmitool("sensor"))
    assert tool["03-CPU 2"][0]["value"] == tool["13-Chipset"][0]["value"] == "na"
    assert not [k for k in got if k[1] in ("03-CPU 2", "13-Chipset")]
    # Fans in percent: a status, but no RPM metric.
    assert got[("status", "Fan 1", "fan")] == "ok"
    assert not [k for k in got if k[0] == "fan_speed"]
    assert got[("status", "Power Supply 1", "power_supply")] == "ok"
    assert got[("status", "Power Supply 2", "power_supply")] == "failed"  # input lost


def test_supermicro(sims: dict[str, IpmiSim], results: dict[str, PollResult]) -> None:
    sim, result = sims["supermicro"], results["supermicro"]
    got = readings(result)
    assert result.data is not None
    assert result.data.info.vendor == "Supermicro"
    assert got[("temperature", "CPU1 Temp", "")] == _ipmitool_value(sim, "CPU1 Temp") == 45
    assert got[("temperature", "System Temp", "")] == 29
    by_sensor = {r.sensor: r for r in result.data.readings if r.quantity.value == "temperature"}
    assert by_sensor["System Temp"].location == "ambient"
    assert by_sensor["CPU1 Temp"].location == "cpu"
    assert by_sensor["Peripheral Temp"].location == "other"
    assert got[("fan_speed", "FAN1", "")] == _ipmitool_value(sim, "FAN1") == 3100
    for limit, column in [
        ("low.critical", "lc"),
        ("low.degraded", "lnc"),
        ("high.degraded", "unc"),
        ("high.critical", "uc"),
    ]:
        assert got[("fan_speed", "FAN1", limit)] == _ipmitool_value(sim, "FAN1", column)
    assert got[("fan_speed", "FANA", "")] == 0
    assert got[("status", "FANA", "fan")] == "failed"
    # The empty fan header reads "no reading": omitted.
    assert not [k for k in got if k[1] == "FAN4"]
    assert got[("status", "PS1 Status", "power_supply")] == "ok"


@pytest.mark.parametrize("vendor", VENDORS)
def test_golden_exposition(results: dict[str, PollResult], vendor: str) -> None:
    text = golden_exposition(results[vendor])
    promtool_check_metrics(text)
    check_golden(f"ipmi-{vendor}", text)


def test_explicit_profile_overrides_detection(sims: dict[str, IpmiSim]) -> None:
    # A Supermicro BMC polled with the generic profile: "System Temp" is then just "other".
    result = asyncio.run(poll_once(ipmi_config(sims["supermicro"], profile="ipmi-generic")))
    assert result.data is not None and result.data.info.profile == "ipmi-generic"
    by_sensor = {r.sensor: r for r in result.data.readings if r.quantity.value == "temperature"}
    assert by_sensor["System Temp"].location == "other"
    assert by_sensor["CPU1 Temp"].location == "cpu"
