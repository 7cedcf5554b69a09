"""Redfish against real peers: sushy-static serving the DMTF public-rackmount1 mockup (and
copies of it edited into a legacy-only service, a leaking one and a TLS one), and the
simulator's Redfish BMC for sessions, basic auth and $expand."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from poller.cli import main
from poller.config import Config, parse_config
from poller.driver import DriverContext, PollSpec
from poller.model import PollResult, Reading
from poller.profiles import load_profiles
from poller.redfish.driver import RedfishDriver
from tests.redfish_peers import (
    FIXTURES,
    SushyStatic,
    copy_mockup,
    read_json,
    write_json,
)
from tests.util import golden_exposition, poll_once, promtool_check_metrics, readings, require

pytestmark = pytest.mark.integration


def redfish_config(
    address: str,
    profile: str | None = None,
    options: dict[str, Any] | None = None,
    timeout: str = "10s",
    **auth: Any,
) -> Config:
    """A one-target Redfish config."""
    target: dict[str, Any] = {
        "name": "rf-1",
        "address": address,
        "protocol": "redfish",
        "auth": "rf",
        "timeout": timeout,
        "labels": {"site": "testsite", "rack": "A"},
    }
    if profile:
        target["profile"] = profile
    if options:
        target["redfish"] = options
    credentials = {"protocol": "redfish", "username": "monitor", "password": "pw", **auth}
    doc = {"auths": {"rf": credentials}, "targets": [target]}
    return parse_config(yaml.safe_dump(doc), "<test>")


def by_location(result: PollResult, quantity: str = "temperature") -> dict[str, list[Reading]]:
    """Value readings (no limits) of a quantity, by location."""
    assert result.data is not None, f"{result.reason}: {result.message}"
    out: dict[str, list[Reading]] = {}
    for r in result.data.readings:
        if r.quantity.value == quantity and r.limit_type is None:
            out.setdefault(r.location.value if r.location else "", []).append(r)
    return out


@pytest.fixture(scope="module")
def mockup() -> Iterator[SushyStatic]:
    """sushy-static serving the unmodified mockup."""
    with SushyStatic() as peer:
        yield peer


@pytest.fixture(scope="module")
def mockup_result(mockup: SushyStatic) -> PollResult:
    """One poll of the mockup through the real driver and scheduler code."""
    return asyncio.run(poll_once(redfish_config(mockup.address)))


def test_mockup_thermal_subsystem(mockup_result: PollResult) -> None:
    got = readings(mockup_result)
    temps = by_location(mockup_result)
    # Sensors are named as the BMC names them (Name), not by their Ids.
    assert [(r.sensor, r.value) for r in temps["inlet"]] == [
        ("Front Panel Intake Temperature", 24.8)
    ]
    assert [(r.sensor, r.value) for r in temps["exhaust"]] == [
        ("Fan Bay #1 Exhaust Temperature", 40.5)
    ]
    # The summary "Ambient" points to the AmbientTemp sensor: one series.
    assert [(r.sensor, r.value) for r in temps["ambient"]] == [("Ambient Temperature", 22.5)]
    assert got[("fan_speed", "Fan Bay 1", "")] == 2200
    assert got[("fan_speed_ratio", "Fan Bay 1", "")] == pytest.approx(0.45)
    assert got[("status", "Fan Bay 1", "fan")] == "ok"
    # The CPU sensor's Thresholds: UpperCritical 45, UpperCaution 42 (User ones ignored).
    assert got[("temperature", "CPU #1 Temperature", "high.critical")] == 45
    assert got[("temperature", "CPU #1 Temperature", "high.degraded")] == 42
    assert by_location(mockup_result)["cpu"][0].sensor == "CPU #1 Temperature"
    # Power supply Bay1 is Health Warning; Bay2 is Absent and so not reported at all.
    assert got[("status", "Power Supply Bay 1", "power_supply")] == "degraded"
    assert not any(k[1].startswith("Power Supply Bay 2") for k in got)
    assert got[("power", "Power reading for the Chassis", "")] == 374
    # Bay1's PowerSupplyMetrics; the Sensors they point to are not read a second time.
    assert got[("voltage", "Power Supply Bay 1 input", "")] == pytest.approx(230.2)
    assert got[("power", "Power Supply Bay 1 input", "")] == pytest.approx(937.4)
    assert got[("power", "Power Supply Bay 1 output", "")] == pytest.approx(937.4)
    assert got[("status", "Power Supply Bay 1 input", "power_supply")] == "ok"  # Normal
    assert not any(k[1] == "Power Supply #1 Input Voltage" for k in got)
    # Current, energy and frequency sensors have no hwpoller quantity.
    assert not any("Current" in k[1] or "Energy" in k[1] for k in got)
    assert mockup_result.data is not None
    info = mockup_result.data.info
    assert (info.vendor, info.model, info.firmware, info.profile, info.protocol) == (
        "Contoso",
        "3500RX",
        "1.45.455b66-rev4",
        "redfish-generic",
        "redfish",
    )
    assert mockup_result.data.partial_errors == ()


def test_mockup_exposition(mockup_result: PollResult) -> None:
    text = golden_exposition(mockup_result)
    assert 'hw_device_info{device="rf-1"' in text
    line = next(x for x in text.splitlines() if x.startswith("hw_device_info{"))
    assert 'protocol="redfish"' in line and 'vendor="Contoso"' in line
    assert 'hw_temperature_celsius{device="rf-1",location="inlet"' in text
    assert 'hwpoller_up{device="rf-1",protocol="redfish"' in text
    promtool_check_metrics(text)


def _legacy_copy(tmp_path: Path) -> Path:
    """The mockup as a pre-2020 service: Thermal and Power only, no ThermalSubsystem,
    PowerSubsystem or Sensors; Thermal carries the same values ThermalSubsystem had."""
    tree = copy_mockup(tmp_path / "legacy")
    metrics = read_json(tree, "Chassis/1U/ThermalSubsystem/ThermalMetrics")
    fan = read_json(tree, "Chassis/1U/ThermalSubsystem/Fans/Bay1")
    sensor_names = {
        entry["DataSourceUri"]: read_json(
            tree, entry["DataSourceUri"].removeprefix("/redfish/v1/")
        )["Name"]
        for entry in metrics["TemperatureReadingsCelsius"]
    }
    chassis = read_json(tree, "Chassis/1U")
    for key in ("ThermalSubsystem", "PowerSubsystem", "Sensors", "EnvironmentMetrics"):
        chassis.pop(key, None)
        shutil.rmtree(tree / "Chassis/1U" / key, ignore_errors=True)
    write_json(tree, "Chassis/1U", chassis)
    thermal = read_json(tree, "Chassis/1U/Thermal")
    temperatures: list[dict[str, Any]] = []
    for entry in metrics["TemperatureReadingsCelsius"]:
        temperatures.append(
            {
                "MemberId": str(len(temperatures)),
                "Name": sensor_names[entry["DataSourceUri"]],
                "ReadingCelsius": entry["Reading"],
                "PhysicalContext": entry["DeviceName"],  # Intake, Exhaust
                "Status": {"State": "Enabled", "Health": "OK"},
            }
        )
    thermal["Temperatures"] = temperatures
    thermal["Fans"] = [
        {
            "MemberId": "0",
            "Name": fan["Name"],
            "Reading": fan["SpeedPercent"]["SpeedRPM"],
            "ReadingUnits": "RPM",
            "Status": fan["Status"],
        }
    ]
    write_json(tree, "Chassis/1U/Thermal", thermal)
    return tree


def test_legacy_thermal_gives_the_same_quantities(
    tmp_path: Path, mockup_result: PollResult
) -> None:
    with SushyStatic(_legacy_copy(tmp_path)) as peer:
        result = asyncio.run(poll_once(redfish_config(peer.address)))
    got, modern = readings(result), readings(mockup_result)
    for key in (
        ("temperature", "Front Panel Intake Temperature", ""),
        ("temperature", "Fan Bay #1 Exhaust Temperature", ""),
        ("fan_speed", "Fan Bay 1", ""),
        ("status", "Fan Bay 1", "fan"),
    ):
        assert got[key] == modern[key], key
    legacy = by_location(result)
    assert [r.value for r in legacy["inlet"]] == [24.8]
    assert [r.value for r in legacy["exhaust"]] == [40.5]
    # Power (deprecated): PowerControl, Voltages (VRM1 12 V), PowerSupplies.
    assert got[("power", "System Input Power", "")] == 344
    assert got[("voltage", "VRM1 Voltage", "")] == 12
    assert got[("voltage", "Power Supply Bay input", "")] == 120  # LineInputVoltage
    assert got[("power", "Power Supply Bay output", "")] == 325  # LastPowerOutputWatts
    assert not any(k[0] == "fan_speed_ratio" for k in got)  # Thermal has no percent


def test_leak_detectors_and_failed_fan(tmp_path: Path) -> None:
    tree = copy_mockup(tmp_path / "leaky")
    shutil.copytree(FIXTURES / "leaks-and-failed-fan", tree, dirs_exist_ok=True)
    with SushyStatic(tree) as peer:
        result = asyncio.run(poll_once(redfish_config(peer.address)))
    got = readings(result)
    tray, plate = "Chassis drip tray leak detector", "CPU 1 cold plate leak detector"
    assert got[("leak", tray, "")] == 1
    assert got[("leak", plate, "")] == 0
    assert got[("status", tray, "leak")] == "failed"
    assert got[("status", plate, "leak")] == "ok"
    assert not any(k[1] == "Unconnected leak detector input" for k in got)  # Absent
    leaks = by_location(result, "leak")
    assert [r.sensor for r in leaks["floor"]] == [tray]  # "drip tray" by name
    assert [r.sensor for r in leaks["cpu"]] == [plate]  # PhysicalContext CPU
    assert got[("fan_speed", "Fan Bay 2", "")] == 0
    assert got[("status", "Fan Bay 2", "fan")] == "failed"
    assert got[("status", "Fan Bay 1", "fan")] == "ok"
    text = golden_exposition(result)
    assert f'hw_leak_detected{{device="rf-1",location="floor",rack="A",sensor="{tray}"' in text


def test_expand_announced_but_refused_falls_back_once(mockup: SushyStatic) -> None:
    """The mockup's root announces $expand; sushy-static answers 404 to any query. The
    driver gives $expand up after the first refusal, so later polls cost the same as with
    `expand: false`, and only sensors that gave readings are re-read between full reads."""

    async def polls(expand: bool) -> list[int]:
        config = redfish_config(mockup.address, options={"expand": expand})
        spec = PollSpec.from_config(config, config.targets[0])
        driver = RedfishDriver(spec, DriverContext(load_profiles()))
        counts = []
        try:
            for _ in range(3):
                await driver.poll()
                counts.append(driver.requests_last_poll)
        finally:
            await driver.close()
        return counts

    with_expand, without = asyncio.run(polls(True)), asyncio.run(polls(False))
    assert with_expand[1:] == without[1:]
    assert with_expand[0] == without[0] + 1  # the first collection (Managers), once
    assert without[1] < without[0]  # 41 sensors at first, only the useful ones after


@pytest.fixture
def tls_mockup(tmp_path: Path) -> Iterator[tuple[SushyStatic, Path]]:
    """sushy-static over HTTPS with a fresh self-signed certificate for 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [require("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    peer = SushyStatic(tls=(cert, key))
    with peer:
        yield peer, cert


def test_tls_verified_by_default_with_ca_file_or_insecure(
    tls_mockup: tuple[SushyStatic, Path],
) -> None:
    peer, cert = tls_mockup
    address = f"127.0.0.1:{peer.port}"  # host:port means https
    refused = asyncio.run(poll_once(redfish_config(address)))
    assert (refused.success, refused.reason) == (False, "protocol")
    assert "certificate is not trusted" in refused.message and "ca_file" in refused.message
    trusted = asyncio.run(poll_once(redfish_config(address, ca_file=str(cert))))
    assert readings(trusted)[("fan_speed", "Fan Bay 1", "")] == 2200
    insecure = asyncio.run(poll_once(redfish_config(f"https://{address}", tls_insecure=True)))
    assert insecure.success, insecure.message


def test_probe_prints_redfish_readings(
    mockup: SushyStatic, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = {
        "auths": {"rf": {"protocol": "redfish", "username": "u", "password": "p"}},
        "targets": [
            {"name": "rf-probe", "address": mockup.address, "protocol": "redfish", "auth": "rf"}
        ],
    }
    path = tmp_path / "hwpoller.yml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["probe", "--config.file", str(path)]) == 0
    out = capsys.readouterr().out
    assert "rf-probe" in out and "redfish-generic" in out and "Front Panel Intake" in out, out
    assert "Contoso" in out
