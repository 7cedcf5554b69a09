"""The exposition's fast path: per-target text rendered once per poll, identical to what
prometheus_client's own writer makes of the same samples."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from poller.exporter import StoreCollector, exposition
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


def _data(value: float, sensor: str = 'probe "1"\\rack\nB') -> DeviceData:
    readings = (
        Reading(Quantity.TEMPERATURE, sensor, value, Location.INLET),
        Reading(Quantity.TEMPERATURE, sensor, 40.0, Location.INLET, LimitType.HIGH_CRITICAL),
        Reading(Quantity.STATUS, sensor, state=State.DEGRADED, hw_type=HwType.TEMPERATURE),
        Reading(Quantity.UPS_POWER_SOURCE, "output", state=PowerSource.BATTERY),
        Reading(Quantity.BATTERY_TIME_LEFT, "battery", 1.7e9),
    )
    return DeviceData(DeviceInfo("v", "m", "f", "p"), readings, sources=(("p", 5),))


def _store() -> Store:
    store = Store()
    for name in ("b-dev", "a-dev", "never-polled"):
        store.register(name, "snmp", {"site": "s", "rack": "A"})
    store.record(PollResult("a-dev", "snmp", True, 0.5, 1_700_000_000.0, _data(21.5)))
    store.record(PollResult("b-dev", "snmp", False, 2.0, 1_700_000_001.0, reason="timeout"))
    return store


def _reference(store: Store) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return generate_latest(registry)


def test_fast_text_is_what_prometheus_client_writes() -> None:
    store = _store()
    assert exposition(store) == _reference(store)


def test_new_poll_result_is_rendered_and_old_text_reused() -> None:
    store = _store()
    first = exposition(store)
    assert b'sensor="probe \\"1\\"\\\\rack\\nB"' in first  # escaped like prometheus_client
    assert exposition(store) == first
    store.record(PollResult("a-dev", "snmp", True, 0.5, 1_700_000_030.0, _data(23.0)))
    second = exposition(store)
    assert b"} 23.0\n" in second and b"} 21.5\n" not in second
    assert second == _reference(store)
    store.retain({"b-dev"})
    assert b'device="a-dev"' not in exposition(store)


def test_not_yet_polled_target_is_not_down() -> None:
    text = exposition(_store()).decode()
    up = [line for line in text.splitlines() if line.startswith("hwpoller_up{")]
    assert any('device="b-dev"' in line and line.endswith(" 0.0") for line in up)
    assert not any('device="never-polled"' in line for line in up)
    # Its other health series exist from start-up.
    assert 'hwpoller_last_success_timestamp_seconds{device="never-polled"' in text


def test_sensor_labels_move_a_sensor_to_its_own_rack() -> None:
    import re

    store = Store()
    rules = ((re.compile(r"(?i)rack b"), (("rack", "B"),)),)
    store.register("env-1", "snmp", {"site": "s", "rack": "A"}, rules)
    readings = (
        Reading(Quantity.LEAK, "Spot Leak (Rack B Under Floor)", 1.0, Location.FLOOR),
        Reading(Quantity.TEMPERATURE, "Probe rack A", 22.0, Location.INLET),
    )
    data = DeviceData(DeviceInfo("v", "m", "f", "p"), readings)
    store.record(PollResult("env-1", "snmp", True, 0.5, 1.0, data))
    text = exposition(store).decode()
    leak = next(line for line in text.splitlines() if line.startswith("hw_leak_detected{"))
    assert 'rack="B"' in leak and 'device="env-1"' in leak
    temp = next(line for line in text.splitlines() if line.startswith("hw_temperature_celsius{"))
    assert 'rack="A"' in temp
    # The device's own series stay where the device is.
    info = next(line for line in text.splitlines() if line.startswith("hw_device_info{"))
    assert 'rack="A"' in info
    assert exposition(store).decode() == _reference(store).decode()


def test_non_snmp_readings_are_checked_too() -> None:
    import asyncio

    from poller.driver import Checked

    class Fake:
        async def poll(self) -> DeviceData:
            readings = (
                Reading(Quantity.TEMPERATURE, "Inlet Temp", 24.0, Location.INLET),
                Reading(Quantity.TEMPERATURE, "Inlet Temp", 25.0, Location.INLET),  # twice
                Reading(Quantity.TEMPERATURE, "CPU Temp", 1.8e16, Location.CPU),  # garbage
                Reading(Quantity.FAN_SPEED, "FAN1", -5.0),  # impossible
            )
            return DeviceData(DeviceInfo(), readings)

        async def close(self) -> None:
            pass

    data = asyncio.run(Checked(Fake()).poll())
    assert [(r.sensor, r.value) for r in data.readings] == [("Inlet Temp", 24.0)]
    assert dict(data.dropped) == {"duplicate": 1, "out_of_range": 2}


def test_cached_health_lines_follow_every_change() -> None:
    """The poller's own families reuse their label prefixes across polls: a new firmware,
    a new profile, drops, partial errors, a failure and a recovery must all show."""
    store = _store()
    base = _data(21.5)
    changes = [
        DeviceData(DeviceInfo("v", "m", "f2", "p"), base.readings, sources=(("p", 5),)),
        DeviceData(
            DeviceInfo("v", "m", "f2", "p", "snmpv2c"),
            base.readings,
            partial_errors=("walk x: timeout",),
            dropped=(("out_of_range", 2),),
            sources=(("p", 4), ("q", 1)),
        ),
        None,
        DeviceData(DeviceInfo("v", "m", "f3", "p"), base.readings),
    ]
    for step, data in enumerate(changes):
        at = 1_700_000_100.0 + step
        if data is None:
            store.record(PollResult("a-dev", "snmp", False, 1.0, at, reason="timeout"))
        else:
            store.record(PollResult("a-dev", "snmp", True, 0.25 + step, at, data))
        assert exposition(store) == _reference(store), step


def test_state_lines_follow_state_changes_and_duplicates() -> None:
    """A status or power-source reading's lines are kept whole per state: each change of
    state shows, a reading listed twice is written once, and a new sensor appears."""
    store = _store()
    states = [State.OK, State.FAILED, State.DEGRADED, State.OK]
    sources = [PowerSource.UTILITY, PowerSource.BATTERY, PowerSource.BYPASS, PowerSource.NONE]
    for step, (state, source) in enumerate(zip(states, sources, strict=True)):
        status = Reading(Quantity.STATUS, "fan 1", state=state, hw_type=HwType.FAN)
        readings = [status, status, Reading(Quantity.UPS_POWER_SOURCE, "output", state=source)]
        if step >= 2:
            readings.append(Reading(Quantity.STATUS, "fan 2", state=state, hw_type=HwType.FAN))
        data = DeviceData(DeviceInfo("v", "m", "f", "p"), tuple(readings))
        store.record(PollResult("a-dev", "snmp", True, 0.5, 1_700_000_200.0 + step, data))
        text = exposition(store)
        assert text == _reference(store), step
        fan = [line for line in text.splitlines() if b'sensor="fan 1"' in line]
        assert len(fan) == len(State)  # one line per state, not two readings' worth
        assert [line for line in fan if line.endswith(b" 1.0")] == [
            line for line in fan if f'state="{state.value}"'.encode() in line
        ]


def test_unchanged_readings_reuse_their_lines() -> None:
    """A poll whose DeviceData is last poll's object reuses its reading lines: the health
    lines (duration, last success) still follow, and a new object renders afresh."""
    store = _store()
    data = _data(21.5)
    for step in range(3):
        store.record(PollResult("a-dev", "snmp", True, 0.1 + step, 1_700_000_300.0 + step, data))
        assert exposition(store) == _reference(store), step
    store.record(PollResult("a-dev", "snmp", False, 1.0, 1_700_000_310.0, reason="timeout"))
    assert exposition(store) == _reference(store)
    store.record(PollResult("a-dev", "snmp", True, 0.2, 1_700_000_320.0, data))
    assert exposition(store) == _reference(store)
    store.record(PollResult("a-dev", "snmp", True, 0.2, 1_700_000_330.0, _data(30.0)))
    assert exposition(store) == _reference(store)
    store.register("a-dev", "snmp", {"site": "t", "rack": "A"})  # labels changed
    store.record(PollResult("a-dev", "snmp", True, 0.2, 1_700_000_340.0, data))
    assert exposition(store) == _reference(store)
