"""Servers as they really are (issue 27): the project's own Redfish trees
(tests/fixtures/redfish/, written from the DMTF schema documentation) served by sushy-static
and polled through the real driver and scheduler code.

- hpe-legacy-power: deprecated Power with two supplies both named "HpeServerPowerSupply"
  (the second without input) and Thermal with percent fans, as HPE iLO 5 answers;
- legacy-percent-fans: deprecated Thermal as older firmware answers it (FanName,
  CurrentReading and Units; Reading and ReadingUnits Percent; RPM), with two temperatures
  of one Name;
- modern-subsystems: ThermalSubsystem, PowerSubsystem with PowerSupplyMetrics (supply 2
  lost its input), Sensors, summaries, and two members of one Name in every collection.

The conformance test checks, per tree, that every temperature, fan, power supply and leak
detector the tree holds is read once: no duplicate series, nothing dropped as duplicate.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from poller.model import PollResult, Quantity, Reading
from poller.profiles import load_profiles
from poller.redfish.profile import LoadedRedfishProfile
from poller.redfish.readings import ChassisData, chassis_readings
from tests.deploy_support import RULE_FILES, run, tool
from tests.redfish_peers import FIXTURES, MOCKUP, SushyStatic
from tests.test_redfish import redfish_config
from tests.util import golden_exposition, poll_once, promtool_check_metrics, readings

pytestmark = pytest.mark.integration

TREES = ("hpe-legacy-power", "legacy-percent-fans", "modern-subsystems")


@pytest.fixture(scope="module")
def polled() -> dict[str, PollResult]:
    """One poll of each tree (and of the DMTF mockup), each served on its own port."""
    results: dict[str, PollResult] = {}
    for name, tree in [*((t, FIXTURES / t) for t in TREES), ("public-rackmount1", MOCKUP)]:
        with SushyStatic(tree) as peer:
            results[name] = asyncio.run(poll_once(redfish_config(peer.address)))
    return results


# -- conformance: every part once -----------------------------------------------------------


def _present(obj: dict[str, Any]) -> bool:
    return obj.get("Status", {}).get("State") not in ("Absent", "Disabled", "UnavailableOffline")


def _kind(odata_type: str) -> str:
    """ "#PowerSupply.v1_5_0.PowerSupply" -> "PowerSupply"."""
    return odata_type.lstrip("#").partition(".")[0]


def expected_parts(tree: Path) -> Counter[str]:
    """The physical parts a tree describes, by kind, counted from its JSON: what a reader
    of the whole schema range must report, each once. The deprecated Thermal and Power
    count only for a chassis without ThermalSubsystem / PowerSubsystem (the driver reads
    those then, and so would any client)."""
    parts: Counter[str] = Counter()
    for chassis_file in (tree / "Chassis").glob("*/index.json"):
        chassis = json.loads(chassis_file.read_text())
        for path in chassis_file.parent.rglob("index.json"):
            doc = json.loads(path.read_text())
            kind = _kind(doc.get("@odata.type", ""))
            if kind == "Thermal" and "ThermalSubsystem" not in chassis:
                temps = [t for t in doc.get("Temperatures", []) if _present(t)]
                parts["temperature"] += len(temps)
                parts["fan"] += len([f for f in doc.get("Fans", []) if _present(f)])
            elif kind == "Power" and "PowerSubsystem" not in chassis:
                supplies = doc.get("PowerSupplies", [])
                parts["power_supply"] += len([p for p in supplies if _present(p)])
            elif kind in ("Fan", "PowerSupply", "LeakDetector") and _present(doc):
                parts[{"Fan": "fan", "PowerSupply": "power_supply"}.get(kind, "leak")] += 1
            elif kind == "Sensor" and _present(doc) and doc.get("ReadingUnits") == "Cel":
                parts["temperature"] += 1
            elif kind == "ThermalMetrics":
                entries = doc.get("TemperatureReadingsCelsius", [])
                parts["temperature"] += len([e for e in entries if "DataSourceUri" not in e])
    return parts


def _supply(sensor: str) -> str:
    return sensor.removesuffix(" input").removesuffix(" output")


def reported_parts(result: PollResult) -> Counter[str]:
    """The parts a poll reported, by kind (a part's several readings count once)."""
    assert result.data is not None, f"{result.reason}: {result.message}"
    seen: set[tuple[str, str]] = set()
    for r in result.data.readings:
        if r.limit_type is not None:
            continue
        if r.quantity == Quantity.TEMPERATURE:
            seen.add(("temperature", r.sensor))
        elif r.quantity in (Quantity.FAN_SPEED, Quantity.FAN_SPEED_RATIO):
            seen.add(("fan", r.sensor))
        elif r.quantity == Quantity.LEAK:
            seen.add(("leak", r.sensor))
        elif r.quantity == Quantity.STATUS and r.hw_type is not None:
            kind = r.hw_type.value if r.hw_type.value != "temperature" else ""
            if kind in ("fan", "leak"):
                seen.add((kind, r.sensor))
            elif kind == "power_supply":
                seen.add((kind, _supply(r.sensor)))
        elif r.quantity in (Quantity.VOLTAGE, Quantity.POWER) and _supply(r.sensor) != r.sensor:
            seen.add(("power_supply", _supply(r.sensor)))
    return Counter(kind for kind, _ in seen)


@pytest.mark.parametrize("name", [*TREES, "public-rackmount1"])
def test_every_part_is_read_once(polled: dict[str, PollResult], name: str) -> None:
    result = polled[name]
    tree = MOCKUP if name == "public-rackmount1" else FIXTURES / name
    assert reported_parts(result) == expected_parts(tree)
    assert result.data is not None
    assert result.data.dropped == ()  # no duplicate, nothing out of range
    series = [r.series for r in result.data.readings]
    assert len(series) == len(set(series))
    assert result.data.partial_errors == ()
    promtool_check_metrics(golden_exposition(result))


# -- one test per defect of the issue ---------------------------------------------------------


def test_same_named_parts_stay_one_series_each(polled: dict[str, PollResult]) -> None:
    """HPE iLO names both supplies "HpeServerPowerSupply": the second (failed, no input)
    was dropped as a duplicate and so invisible. Every collection alike."""
    hpe = readings(polled["hpe-legacy-power"])
    assert hpe[("status", "HpeServerPowerSupply 0", "power_supply")] == "ok"
    assert hpe[("status", "HpeServerPowerSupply 1", "power_supply")] == "failed"
    modern = readings(polled["modern-subsystems"])
    # Fans named alike are told apart by their service label, sensors and leak detectors
    # by their Id.
    assert modern[("fan_speed_ratio", "System Fan Fan 1", "")] == pytest.approx(0.40)
    assert modern[("fan_speed_ratio", "System Fan Fan 2", "")] == pytest.approx(0.42)
    assert modern[("temperature", "CPU Temp CPU1Temp", "")] == 48
    assert modern[("temperature", "CPU Temp CPU2Temp", "")] == 51
    assert modern[("leak", "Tray Leak Detector Front", "")] == 0
    assert modern[("leak", "Tray Leak Detector Rear", "")] == 1
    legacy = readings(polled["legacy-percent-fans"])
    # Thermal members without a MemberId: their place in the array.
    assert legacy[("temperature", "DIMM Temp 1", "")] == 41
    assert legacy[("temperature", "DIMM Temp 2", "")] == 47


def test_percent_fans_in_every_documented_form(polled: dict[str, PollResult]) -> None:
    got = readings(polled["legacy-percent-fans"])
    assert got[("fan_speed_ratio", "Fan 1", "")] == pytest.approx(0.35)  # CurrentReading, Units
    assert got[("fan_speed_ratio", "Fan 2", "")] == 0
    assert got[("status", "Fan 2", "fan")] == "failed"
    assert got[("fan_speed_ratio", "Fan 3", "")] == pytest.approx(0.62)  # ReadingUnits Percent
    assert got[("fan_speed", "Fan 4", "")] == 7200  # RPM
    assert not any(k[1] == "Fan 5" for k in got)  # Absent
    assert not any(k[0] == "fan_speed" and k[1] != "Fan 4" for k in got)
    hpe = readings(polled["hpe-legacy-power"])
    assert hpe[("fan_speed_ratio", "Fan 3", "")] == pytest.approx(0.30)
    # ThermalSubsystem fans with SpeedPercent.Reading and no SpeedRPM (checked above too).
    modern = readings(polled["modern-subsystems"])
    assert not any(k[0] == "fan_speed" for k in modern)


def test_power_supply_input_and_output(polled: dict[str, PollResult]) -> None:
    hpe = readings(polled["hpe-legacy-power"])
    assert hpe[("voltage", "HpeServerPowerSupply 0 input", "")] == 231  # LineInputVoltage
    assert hpe[("power", "HpeServerPowerSupply 0 input", "")] == 226  # PowerInputWatts
    assert hpe[("power", "HpeServerPowerSupply 0 output", "")] == 212  # LastPowerOutputWatts
    assert hpe[("voltage", "HpeServerPowerSupply 1 input", "")] == 0
    assert hpe[("power", "Server Power Control", "")] == 212  # the system's, PowerControl
    modern = readings(polled["modern-subsystems"])
    assert modern[("voltage", "Power Supply 1 input", "")] == 229.5  # PowerSupplyMetrics
    assert modern[("power", "Power Supply 1 input", "")] == 301
    assert modern[("power", "Power Supply 1 output", "")] == 283
    assert modern[("voltage", "Power Supply 2 input", "")] == 0
    assert modern[("status", "Power Supply 1 input", "power_supply")] == "ok"  # Normal
    assert modern[("status", "Power Supply 2 input", "power_supply")] == "failed"  # LossOfInput
    assert modern[("power", "Total Power", "")] == 301  # the system's, a Sensor
    # The Sensors the metrics point to (DataSourceUri) are the same values: not again.
    assert not any(k[1].startswith(("PSU1 ", "PSU2 ")) for k in modern)
    text = golden_exposition(polled["modern-subsystems"])
    assert 'hw_voltage_volts{device="rf-1",rack="A",sensor="Power Supply 2 input",' in text


def test_summaries_do_not_repeat_sensors(polled: dict[str, PollResult]) -> None:
    """TemperatureSummaryCelsius: Intake points to the inlet sensor, Ambient (no
    DataSourceUri) reads what the inlet sensor reads, Exhaust what the exhaust sensor
    reads: each value once, under the sensor's name."""
    result = polled["modern-subsystems"]
    assert result.data is not None
    temps = [r for r in result.data.readings if r.quantity == Quantity.TEMPERATURE]
    values = [(r.sensor, r.location.value if r.location else "") for r in temps if not r.limit_type]
    assert sorted(values) == [
        ("CPU Temp CPU1Temp", "cpu"),
        ("CPU Temp CPU2Temp", "cpu"),
        ("Exhaust Temperature", "exhaust"),
        ("Inlet Temperature", "inlet"),
    ]


def _generic() -> LoadedRedfishProfile:
    return load_profiles().typed("redfish-generic", LoadedRedfishProfile)


def _values(found: list[Reading]) -> dict[str, float]:
    return {r.sensor: r.value for r in found if r.limit_type is None and r.state is None}


def test_a_summary_stands_in_when_no_sensor_gives_its_value() -> None:
    metrics = {
        "TemperatureSummaryCelsius": {"Intake": {"Reading": 23}, "Exhaust": {"Reading": 30}},
        "TemperatureReadingsCelsius": [
            {"DeviceName": "CPU", "Reading": 50, "PhysicalContext": "CPU"},
        ],
    }
    found, _ = chassis_readings(ChassisData("1", thermal_metrics=metrics), _generic())
    assert _values(found) == {"CPU": 50, "Intake": 23, "Exhaust": 30}
    inlet = next(r for r in found if r.sensor == "Intake")
    assert inlet.location is not None and inlet.location.value == "inlet"


def test_names_are_the_bmc_names_and_ids_only_without_one() -> None:
    sensors = [
        {"@odata.id": "/redfish/v1/Chassis/1/Sensors/T1", "Id": "T1", "Name": "Inlet Temp",
         "ReadingUnits": "Cel", "Reading": 21},
        {"@odata.id": "/redfish/v1/Chassis/1/Sensors/T2", "Id": "T2", "ReadingUnits": "Cel",
         "Reading": 40},
        {"@odata.id": "/redfish/v1/Chassis/1/Sensors/T3", "ReadingUnits": "Cel", "Reading": 41},
    ]  # fmt: skip
    found, _ = chassis_readings(ChassisData("1", sensors=sensors), _generic())
    assert _values(found) == {"Inlet Temp": 21, "T2": 40, "T3": 41}


def test_legacy_entry_of_a_sensor_already_read_is_not_repeated() -> None:
    """Services keep the deprecated Thermal beside Sensors: one temperature, once."""
    sensors = [
        {"@odata.id": "/redfish/v1/Chassis/1/Sensors/CPU1", "Id": "CPU1", "Name": "CPU1 Temp",
         "ReadingType": "Temperature", "ReadingUnits": "Cel", "Reading": 44},
    ]  # fmt: skip
    thermal = {
        "Temperatures": [{"MemberId": "0", "Name": "CPU1 Temp", "ReadingCelsius": 44}],
        "Fans": [{"MemberId": "0", "Name": "Fan 1", "Reading": 30, "ReadingUnits": "Percent"}],
    }
    found, _ = chassis_readings(ChassisData("1", sensors=sensors, thermal=thermal), _generic())
    series = [r.series for r in found]
    assert len(series) == len(set(series))
    assert _values(found) == {"CPU1 Temp": 44, "Fan 1": 0.30}


def test_a_pulled_supply_does_not_rename_the_other() -> None:
    def names(states: tuple[str, str]) -> set[str]:
        power = {
            "PowerSupplies": [
                {"MemberId": str(i), "Name": "PSU", "Status": {"State": s, "Health": "OK"}}
                for i, s in enumerate(states)
            ]
        }
        found, _ = chassis_readings(ChassisData("1", power=power), _generic())
        return {r.sensor for r in found}

    assert names(("Enabled", "Enabled")) == {"PSU 0", "PSU 1"}
    assert names(("Enabled", "Absent")) == {"PSU 0"}


# -- PowerFeedLost on what the poller really exports ------------------------------------------


def _input_series(result: PollResult) -> list[dict[str, str]]:
    """The exposition of one poll as promtool input series (the same value for 10 min)."""
    out = []
    for line in golden_exposition(result).splitlines():
        if line.startswith("hw_") and "{" in line:
            series, _, value = line.rpartition(" ")
            out.append({"series": series, "values": f"{value}x20"})
    return out


FEED_LOST = (
    "The power supply has no input power while another supply of the same server still has. "
    "The server runs on one feed, with no redundancy: find which PDU, breaker or UPS output "
    "feeds this supply and restore it before the other feed goes too. "
    "Runbook: docs/alerts.md#powerfeedlost"
)


@pytest.mark.parametrize(
    ("name", "lost"),
    [
        ("modern-subsystems", "Power Supply 2 input"),  # 0 V and LossOfInput
        ("hpe-legacy-power", "HpeServerPowerSupply 1 input"),  # 0 V only
    ],
)
def test_power_feed_lost_fires_on_a_polled_server(
    polled: dict[str, PollResult], name: str, lost: str, tmp_path: Path
) -> None:
    case = {
        "interval": "30s",
        "input_series": _input_series(polled[name]),
        "alert_rule_test": [
            {
                "eval_time": "2m",
                "alertname": "PowerFeedLost",
                "exp_alerts": [
                    {"exp_labels": {"severity": "critical", "device": "rf-1", "site": "testsite",
                                    "rack": "A", "sensor": lost},
                     "exp_annotations": {
                         "summary": f"rf-1: power supply {lost} has lost its feed (room , rack A)",
                         "description": FEED_LOST}}
                ],
            }
        ],
    }  # fmt: skip
    path = tmp_path / "feed_test.yml"
    rules = [str(p) for p in RULE_FILES]
    path.write_text(yaml.safe_dump({"rule_files": rules, "tests": [case]}), encoding="utf-8")
    result = run([tool("promtool"), "test", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
