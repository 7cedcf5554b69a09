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
    assert [(r.sensor, r.value) for r in temps["inlet"]] == [("IntakeTemp", 24.8)]
    assert [(r.sensor, r.value) for r in temps["exhaust"]] == [("ExhaustTemp", 40.5)]
    assert [(r.sensor, r.value) for r in temps["ambient"]] == [("AmbientTemp", 22.5)]
    assert got[("fan_speed", "Bay1", "")] == 2200
    assert got[("fan_speed_ratio", "Bay1", "")] == pytest.approx(0.45)
    assert got[("status", "Bay1", "fan")] == "ok"
    # The CPU sensor's Thresholds: UpperCritical 45, UpperCaution 42 (User ones ignored).
    assert got[("temperature", "CPUTemp1", "high.critical")] == 45
    assert got[("temperature", "CPUTemp1", "high.degraded")] == 42
    assert by_location(mockup_result)["cpu"][0].sensor == "CPUTemp1"
    # Power supply Bay1 is Health Warning; Bay2 is Absent and so not reported at all.
    assert got[("status", "Bay1", "power_supply")] == "degraded"
    assert not any(k[1] == "Bay2" and k[2] == "power_supply" for k in got)
    assert got[("power", "TotalPower", "")] == 374
    assert got[("voltage", "PS1InputVoltage", "")] == pytest.approx(119.27)
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
    chassis = read_json(tree, "Chassis/1U")
    for key in ("ThermalSubsystem", "PowerSubsystem", "Sensors", "EnvironmentMetrics"):
        chassis.pop(key, None)
        shutil.rmtree(tree / "Chassis/1U" / key, ignore_errors=True)
    write_json(tree, "Chassis/1U", chassis)
    thermal = read_json(tree, "Chassis/1U/Thermal")
    temperatures = []
    for entry in metrics["TemperatureReadingsCelsius"]:
        temperatures.append(
            {
                "MemberId": str(len(temperatures)),
                "Name": entry["DataSourceUri"].rpartition("/")[2],
                "ReadingCelsius": entry["Reading"],
                "PhysicalContext": entry["DeviceName"],  # Intake, Exhaust
                "Status": {"State": "Enabled", "Health": "OK"},
            }
        )
    thermal["Temperatures"] = temperatures
    thermal["Fans"] = [
        {
            "MemberId": "0",
            "Name": fan["Id"],
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
        ("temperature", "IntakeTemp", ""),
        ("temperature", "ExhaustTemp", ""),
        ("fan_speed", "Bay1", ""),
        ("status", "Bay1", "fan"),
    ):
        assert got[key] == modern[key], key
    legacy = by_location(result)
    assert [(r.sensor, r.value) for r in legacy["inlet"]] == [("IntakeTemp", 24.8)]
    assert [(r.sensor, r.value) for r in legacy["exhaust"]] == [("ExhaustTemp", 40.5)]
    # Power (deprecated): PowerControl, Voltages (VRM1 12 V), PowerSupplies.
    assert got[("power", "System Input Power", "")] == 344
    assert got[("voltage", "VRM1 Voltage", "")] == 12
    assert not any(k[0] == "fan_speed_ratio" for k in got)  # Thermal has no percent


def test_leak_detectors_and_failed_fan(tmp_path: Path) -> None:
    tree = copy_mockup(tmp_path / "leaky")
    shutil.copytree(FIXTURES / "leaks-and-failed-fan", tree, dirs_exist_ok=True)
    with SushyStatic(tree) as peer:
        result = asyncio.run(poll_once(redfish_config(peer.address)))
    got = readings(result)
    assert got[("leak", "ChassisTray", "")] == 1
    assert got[("leak", "CPU1ColdPlate", "")] == 0
    assert got[("status", "ChassisTray", "leak")] == "failed"
    assert got[("status", "CPU1ColdPlate", "leak")] == "ok"
    assert not any(k[1] == "Spare" for k in got)  # Absent
    leaks = by_location(result, "leak")
    assert [r.sensor for r in leaks["floor"]] == ["ChassisTray"]  # "drip tray" by name
    assert [r.sensor for r in leaks["cpu"]] == ["CPU1ColdPlate"]  # PhysicalContext CPU
    assert got[("fan_speed", "Bay2", "")] == 0
    assert got[("status", "Bay2", "fan")] == "failed"
    assert got[("status", "Bay1", "fan")] == "ok"
    text = golden_exposition(result)
    assert 'hw_leak_detected{device="rf-1",location="floor",rack="A",sensor="ChassisTray"' in text


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
    assert readings(trusted)[("fan_speed", "Bay1", "")] == 2200
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
    assert "rf-probe" in out and "redfish-generic" in out and "IntakeTemp" in out, out
    assert "Contoso" in out
