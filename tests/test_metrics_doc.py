"""docs/metrics.md lists exactly the metrics and labels the exporter emits."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from poller.exporter import exposition
from poller.model import (
    DeviceData,
    DeviceInfo,
    HwType,
    LimitType,
    Location,
    PollResult,
    PowerSource,
    Quantity,
    Reading,
    State,
)
from poller.store import Store
from tests.util import promtool_check_metrics

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
STATIC = {"device", "site", "room", "rack"}


def documented() -> dict[str, set[str]]:
    pattern = r"^\| `([a-z_]+)` \| (?:gauge|counter) \|([a-z_, ]*)\|"
    rows = re.findall(pattern, DOC.read_text(), re.M)
    return {name: {x.strip() for x in labels.split(",") if x.strip()} for name, labels in rows}


def every_kind_of_reading() -> tuple[Reading, ...]:
    out = []
    for q in Quantity:
        if q == Quantity.STATUS:
            out.append(Reading(q, "psu 1", state=State.FAILED, hw_type=HwType.POWER_SUPPLY))
        elif q == Quantity.UPS_POWER_SOURCE:
            out.append(Reading(q, "output", state=PowerSource.BATTERY))
        else:
            loc = (
                Location.INLET
                if q in (Quantity.TEMPERATURE, Quantity.HUMIDITY, Quantity.LEAK)
                else None
            )
            out.append(Reading(q, "s1", 1.0, loc))
            if q in (Quantity.TEMPERATURE, Quantity.HUMIDITY, Quantity.FAN_SPEED):
                out.append(Reading(q, "s1", 2.0, loc, limit_type=LimitType.HIGH_CRITICAL))
    return tuple(out)


def test_doc_matches_exporter() -> None:
    store = Store()
    store.register("dev", "snmp", {"site": "s", "room": "r", "rack": "a"})
    data = DeviceData(
        DeviceInfo("v", "m", "f", "p", "snmpv3"),
        every_kind_of_reading(),
        sources=(("p", 12),),
    )
    store.record(PollResult("dev", "snmp", True, 0.1, 1.0, data))
    text = exposition(store).decode()
    promtool_check_metrics(text)
    emitted: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            emitted.setdefault(name, set()).update(set(sample.labels) - STATIC)
    expected = documented()
    assert set(emitted) == set(expected)
    for name, labels in expected.items():
        assert emitted[name] == labels, name


def test_power_source_and_status_are_statesets() -> None:
    store = Store()
    store.register("dev", "snmp", {})
    data = DeviceData(DeviceInfo(), every_kind_of_reading())
    store.record(PollResult("dev", "snmp", True, 0.1, 1.0, data))
    text = exposition(store).decode()
    assert 'hw_ups_power_source{device="dev",source="battery"} 1.0' in text
    assert 'hw_ups_power_source{device="dev",source="utility"} 0.0' in text
    assert (
        'hw_status{device="dev",hw_type="power_supply",sensor="psu 1",state="failed"} 1.0' in text
    )
    assert 'hw_status{device="dev",hw_type="power_supply",sensor="psu 1",state="ok"} 0.0' in text


def test_failed_target_keeps_health_and_drops_readings() -> None:
    store = Store()
    store.register("dev", "snmp", {})
    data = DeviceData(DeviceInfo(), every_kind_of_reading())
    store.record(PollResult("dev", "snmp", True, 0.1, 100.0, data))
    store.record(PollResult("dev", "snmp", False, 2.0, 130.0, reason="timeout", message="x"))
    text = exposition(store).decode()
    assert 'hwpoller_up{device="dev",protocol="snmp"} 0.0' in text
    assert 'hwpoller_last_success_timestamp_seconds{device="dev",protocol="snmp"} 100.0' in text
    assert 'hwpoller_poll_errors_total{device="dev",protocol="snmp",reason="timeout"} 1.0' in text
    assert "hw_temperature_celsius{" not in text
    assert "hw_device_info{" not in text


def test_duplicate_series_are_dropped_not_fatal() -> None:
    store = Store()
    store.register("dev", "snmp", {})
    twice = (Reading(Quantity.FAN_SPEED, "fan", 1.0), Reading(Quantity.FAN_SPEED, "fan", 2.0))
    store.record(PollResult("dev", "snmp", True, 0.1, 1.0, DeviceData(DeviceInfo(), twice)))
    text = exposition(store).decode()
    assert text.count("hw_fan_speed_rpm{") == 1
    promtool_check_metrics(text)
