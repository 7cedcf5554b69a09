"""The room at a glance: the store's latest results arranged as rooms, racks and problems.

Pure: reads TargetViews (never a device) and returns the plain values of poller.room_values
for the status page and its JSON endpoint. A device's place comes from its target's
`site`/`room`/`rack` labels; a sensor's from the target's first `sensor_labels` rule that
matches its name (the labels its series carry), else the device's. Racks are laid out in a
row, ordered by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from poller import protocols
from poller.model import DeviceData, HwType, LimitType, Location, PowerSource, Quantity, Reading
from poller.room_values import (
    RANK,
    Alarm,
    Cooling,
    Device,
    Inlet,
    Leak,
    Overview,
    Problem,
    Rack,
    Room,
    Ups,
    worst,
)
from poller.store import TargetView

# The alert rules' thresholds (deploy/prometheus/rules/alerts.yml), defined here once and
# used wherever the page judges a reading without limits of its own, so that the page and
# the alerts agree; tests/test_statuspage.py reads the rules and checks they are the same.
# Inlet warning and critical: ASHRAE A1's recommended and allowable maxima
# (InletTemperatureHigh).
DEFAULT_INLET_LIMITS = (27.0, 32.0)
# Relative humidity outside 20..80 % is a warning (HumidityOutOfRange).
DEFAULT_HUMIDITY_RANGE = (0.2, 0.8)
# Runtime under 10 min is critical (UpsRuntimeLow), charge under 50 % a warning
# (UpsBatteryChargeLow).
UPS_RUNTIME_CRITICAL = 600.0
UPS_CHARGE_WARNING = 0.5
NO_ROOM = ""

# Where something is drawn: site, room and rack ("" for the room's floor).
Place = tuple[str, str, str]


def _natural(text: str) -> list[Any]:
    """Sort key putting rack 2 before rack 10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _place(labels: dict[str, str]) -> Place:
    return labels.get("site", ""), labels.get("room", NO_ROOM), labels.get("rack", "")


@dataclass
class _Target:
    """Working state for one view while the overview is built."""

    view: TargetView
    labels: dict[str, str]
    data: DeviceData | None
    problems: dict[tuple[str, str], Problem] = field(default_factory=dict)
    # Problems about the device itself (not answering, partly read, its power source), not
    # one of its sensors: they stay with the device wherever its sensors sit.
    own_problems: set[tuple[str, str]] = field(default_factory=set)
    _places: dict[str, Place] = field(default_factory=dict)

    @property
    def home(self) -> Place:
        """Where the device itself is: its target's labels."""
        return _place(self.labels)

    def place(self, sensor: str) -> Place:
        """Where a sensor is: the first sensor_labels rule matching its name applied to the
        target's labels, as the exporter labels its series; the device's place otherwise."""
        found = self._places.get(sensor)
        if found is None:
            labels = self.labels
            for pattern, extra in self.view.sensor_labels:
                if pattern.search(sensor):
                    labels = {**labels, **dict(extra)}
                    break
            found = self._places[sensor] = _place(labels)
        return found

    def add(self, severity: str, sensor: str, text: str, *, of_device: bool = False) -> None:
        """Record a problem of a sensor (placed where the sensor is) or, of_device, of the
        device itself (placed where the device is); of several about one the worst stays."""
        key = (self.view.name, sensor)
        old = self.problems.get(key)
        if old is None or RANK[severity] > RANK[old.severity]:
            site, room, rack = self.home if of_device else self.place(sensor)
            self.problems[key] = Problem(severity, self.view.name, sensor, text, site, room, rack)
            if of_device:
                self.own_problems.add(key)

    def readings(self, quantity: Quantity) -> list[Reading]:
        """The values (not limits) of one quantity."""
        if self.data is None:
            return []
        return [r for r in self.data.readings if r.quantity == quantity and r.limit_type is None]

    def limits(self, reading: Reading) -> dict[LimitType, float]:
        """The device's own thresholds for one reading."""
        if self.data is None:
            return {}
        return {
            r.limit_type: r.value
            for r in self.data.readings
            if r.limit_type is not None
            and r.quantity == reading.quantity
            and r.sensor == reading.sensor
            and r.location == reading.location
        }


def _fmt(value: float, unit: str) -> str:
    return f"{value:.1f} {unit}" if unit == "°C" else f"{value:.0f} {unit}"


def _judge(value: float, limits: dict[LimitType, float]) -> tuple[str, LimitType | None]:
    """(state, the limit breached) of a value against limits; ("ok", None) inside them."""
    for limit_type, state in (
        (LimitType.HIGH_CRITICAL, "critical"),
        (LimitType.LOW_CRITICAL, "critical"),
        (LimitType.HIGH_DEGRADED, "warning"),
        (LimitType.LOW_DEGRADED, "warning"),
    ):
        limit = limits.get(limit_type)
        high = limit_type in (LimitType.HIGH_CRITICAL, LimitType.HIGH_DEGRADED)
        if limit is not None and (value >= limit if high else value <= limit):
            return state, limit_type
    return "ok", None


def _limits(target: _Target, reading: Reading) -> tuple[dict[LimitType, float], bool]:
    """The limits a reading is judged by and whether they are the device's own: its own
    thresholds, or for an inlet with no high limit of its own DEFAULT_INLET_LIMITS and for
    a humidity with no limits at all DEFAULT_HUMIDITY_RANGE (what the alerts use)."""
    limits = target.limits(reading)
    if reading.quantity == Quantity.TEMPERATURE and reading.location == Location.INLET:
        if LimitType.HIGH_DEGRADED in limits or LimitType.HIGH_CRITICAL in limits:
            return limits, True
        limits[LimitType.HIGH_DEGRADED], limits[LimitType.HIGH_CRITICAL] = DEFAULT_INLET_LIMITS
        return limits, False
    if reading.quantity == Quantity.HUMIDITY and not limits:
        limits[LimitType.LOW_DEGRADED], limits[LimitType.HIGH_DEGRADED] = DEFAULT_HUMIDITY_RANGE
        return limits, False
    return limits, True


def _inlets(target: _Target) -> list[tuple[str, Inlet]]:
    """(sensor, its inlet) of every inlet reading of the device, judged by _limits."""
    found = []
    for reading in target.readings(Quantity.TEMPERATURE):
        if reading.location != Location.INLET:
            continue
        limits, own = _limits(target, reading)
        state, _ = _judge(reading.value, limits)
        warning = limits.get(LimitType.HIGH_DEGRADED, limits.get(LimitType.HIGH_CRITICAL, 0.0))
        critical = limits.get(LimitType.HIGH_CRITICAL, warning)
        inlet = Inlet(
            reading.value, state, target.view.name, reading.sensor, warning, critical, own
        )
        found.append((reading.sensor, inlet))
    return found


def _hottest(inlets: Iterable[Inlet | None]) -> Inlet | None:
    """The highest reading, carrying the most urgent state of them all."""
    present = [i for i in inlets if i is not None]
    if not present:
        return None
    top = max(present, key=lambda i: i.celsius)
    state = worst(i.state for i in present)
    return Inlet(
        top.celsius, state, top.device, top.sensor, top.warning, top.critical, top.own_limits
    )


def _check_readings(target: _Target) -> None:
    """Every reading out of its limits, every failed or degraded status, the UPS's power."""
    units = {Quantity.TEMPERATURE: "°C", Quantity.HUMIDITY: "%RH", Quantity.FAN_SPEED: "rpm"}
    for quantity, unit in units.items():
        for reading in target.readings(quantity):
            limits, _ = _limits(target, reading)
            state, breached = _judge(reading.value, limits)
            if breached is None:
                continue
            scale = 100.0 if quantity == Quantity.HUMIDITY else 1.0
            words = "over" if breached.value.startswith("high") else "under"
            target.add(
                state,
                reading.sensor,
                f"{_fmt(reading.value * scale, unit)}, {words} its {breached.value} limit "
                f"{_fmt(limits[breached] * scale, unit)}",
            )
    for reading in target.readings(Quantity.LEAK):
        if reading.value >= 0.5:
            target.add("leak", reading.sensor, "water detected")
    for reading in target.readings(Quantity.STATUS):
        if reading.state in ("failed", "degraded"):
            if reading.hw_type == HwType.LEAK and reading.state == "failed":
                severity = "leak"
            else:
                severity = "critical" if reading.state == "failed" else "warning"
            kind = reading.hw_type.value.replace("_", " ") if reading.hw_type else "status"
            target.add(severity, reading.sensor, f"{kind} {reading.state}")
    for reading in target.readings(Quantity.UPS_POWER_SOURCE):
        if reading.state in (PowerSource.BATTERY, PowerSource.NONE):
            text = "on battery" if reading.state == PowerSource.BATTERY else "output off"
            target.add("critical", "power source", text, of_device=True)
        elif reading.state == PowerSource.BYPASS:
            target.add("warning", "power source", "on bypass", of_device=True)
    for reading in target.readings(Quantity.BATTERY_TIME_LEFT):
        if reading.value < UPS_RUNTIME_CRITICAL:
            target.add("critical", reading.sensor, f"{reading.value / 60:.0f} min runtime left")
    for reading in target.readings(Quantity.BATTERY_CHARGE):
        if reading.value < UPS_CHARGE_WARNING:
            target.add("warning", reading.sensor, f"battery {reading.value * 100:.0f} % charged")
    if target.data is not None and target.data.partial_errors:
        count = len(target.data.partial_errors)
        target.add(
            "warning", "", f"partly read: {count} part(s) of the poll failed", of_device=True
        )


def _kind(target: _Target) -> str:
    """server for a protocol whose targets are servers (its registry record's role, so a
    BMC is a server before it first answers), else what the readings say it is."""
    spec = protocols.by_name().get(target.view.protocol)
    if spec is not None and spec.role is not None:
        return spec.role
    if any(target.readings(Quantity.UPS_POWER_SOURCE)):
        return "ups"
    if any(r.hw_type == HwType.COOLING for r in target.readings(Quantity.STATUS)):
        return "cooling"
    if target.readings(Quantity.LEAK) or target.readings(Quantity.HUMIDITY):
        return "environment"
    return "device"


def _label(target: _Target, kind: str, answer: str, state: str) -> str:
    """The device's state as the page writes it (Device.label): a cooling unit that says
    "cooling failed" must not read COOLING in red, so its alarms name the state."""
    if answer != "up":
        return answer
    if state == "ok":
        return kind
    if kind == "cooling":
        alarms = {r.state for r in target.readings(Quantity.STATUS) if r.hw_type == HwType.COOLING}
        if state == "critical" and "failed" in alarms:
            return "failed"
        if state == "warning" and "degraded" in alarms:
            return "alarm"
    return state


def _device(target: _Target, now: float) -> Device:
    view = target.view
    last = view.last
    if last is None:
        answer, state = "pending", "unknown"
        target.add("unknown", "", "not polled yet", of_device=True)
    elif not last.success:
        answer, state = "down", "warning"
        target.add("warning", "", f"not answering ({last.reason})", of_device=True)
    else:
        answer = "up"
        _check_readings(target)
        state = worst(p.severity for p in target.problems.values())
    info = target.data.info if target.data is not None else None
    kind = _kind(target)
    return Device(
        name=view.name,
        protocol=view.protocol,
        kind=kind,
        answer=answer,
        state=state,
        label=_label(target, kind, answer, state),
        rack=target.labels.get("rack", ""),
        last_success_age=max(0.0, now - view.last_success_at) if view.last_success_at else None,
        reason=last.reason if last is not None and not last.success else "",
        message=last.message if last is not None and not last.success else "",
        vendor=info.vendor if info else "",
        model=info.model if info else "",
        inlet=_hottest(inlet for _, inlet in _inlets(target)),
    )


@dataclass
class _RackParts:
    """What is drawn in one rack while the overview is built."""

    devices: list[Device] = field(default_factory=list)  # its targets (rack label)
    leaks: list[Leak] = field(default_factory=list)  # the leak sensors placed under it
    inlets: list[Inlet] = field(default_factory=list)
    humidity: list[float] = field(default_factory=list)
    severities: list[str] = field(default_factory=list)  # of the problems placed in it


@dataclass
class _RoomParts:
    """What is drawn in one room while the overview is built."""

    racks: dict[str, _RackParts] = field(default_factory=dict)
    unracked: list[tuple[_Target, Device]] = field(default_factory=list)
    members: list[tuple[_Target, Device]] = field(default_factory=list)  # by target labels
    floor_leaks: list[Leak] = field(default_factory=list)
    severities: list[str] = field(default_factory=list)  # of problems on the room's floor


def _rack(name: str, parts: _RackParts) -> Rack:
    """A rack's state from the problems placed in it and whether its devices answer."""
    answering = [d for d in parts.devices if d.answer == "up"]
    if parts.devices and not answering:
        floor = "unknown"  # nothing of its own answers: never green
    elif len(answering) < len(parts.devices):
        floor = "warning"  # some devices down or not yet polled
    else:
        floor = "ok"
    wet = ["leak" for leak in parts.leaks if leak.wet]
    return Rack(
        name,
        worst([floor, *parts.severities, *wet]),
        _hottest(parts.inlets),
        max(parts.humidity, default=None),
        tuple(parts.devices),
        tuple(parts.leaks),
    )


def _arrange(rooms: dict[tuple[str, str], _RoomParts], target: _Target, device: Device) -> None:
    """Put a device where its labels say and each of its sensors where its own labels say:
    a leak spot wired to a monitor in rack A but lying under rack B is drawn under B."""

    def room_of(place: Place) -> _RoomParts:
        return rooms.setdefault((place[0], place[1]), _RoomParts())

    def rack_of(place: Place) -> _RackParts:
        return room_of(place).racks.setdefault(place[2], _RackParts())

    home = target.home
    room_of(home).members.append((target, device))
    if home[2]:
        rack_of(home).devices.append(device)
    else:
        room_of(home).unracked.append((target, device))
    for key, problem in target.problems.items():
        # A rack counts its own devices' answers itself (_rack); only what an answering
        # device says is placed.
        if key in target.own_problems and device.answer != "up" and home[2]:
            continue
        place = (problem.site, problem.room, problem.rack)
        severities = rack_of(place).severities if place[2] else room_of(place).severities
        severities.append(problem.severity)
    for reading in target.readings(Quantity.LEAK):
        place = target.place(reading.sensor)
        leak = Leak(target.view.name, reading.sensor, reading.value >= 0.5)
        (rack_of(place).leaks if place[2] else room_of(place).floor_leaks).append(leak)
    for sensor, inlet in _inlets(target):
        if (place := target.place(sensor))[2]:
            rack_of(place).inlets.append(inlet)
    for reading in target.readings(Quantity.HUMIDITY):
        if (place := target.place(reading.sensor))[2]:
            rack_of(place).humidity.append(reading.value)


def _first(target: _Target, quantity: Quantity, location: Location | None = None) -> float | None:
    for reading in target.readings(quantity):
        if location is None or reading.location == location:
            return reading.value
    return None


def _ups(target: _Target, device: Device) -> Ups:
    sources = target.readings(Quantity.UPS_POWER_SOURCE)
    return Ups(
        device.name,
        device.state,
        sources[0].state if sources else None,
        _first(target, Quantity.BATTERY_CHARGE),
        _first(target, Quantity.BATTERY_TIME_LEFT),
        _first(target, Quantity.UPS_LOAD),
    )


def _cooling(target: _Target, device: Device) -> Cooling:
    alarms = tuple(
        Alarm(r.sensor, r.state or "")
        for r in target.readings(Quantity.STATUS)
        if r.hw_type == HwType.COOLING
    )
    return Cooling(
        device.name,
        device.state,
        alarms,
        _first(target, Quantity.TEMPERATURE, Location.SUPPLY),
        _first(target, Quantity.TEMPERATURE, Location.RETURN),
        _first(target, Quantity.HUMIDITY),
    )


def build(views: Iterable[TargetView], now: float) -> Overview:
    """The overview of every room from the store's views at wall-clock time `now`."""
    rooms: dict[tuple[str, str], _RoomParts] = {}
    everything: list[tuple[_Target, Device]] = []
    for view in views:
        data = view.last.data if view.last is not None and view.last.success else None
        target = _Target(view, dict(view.labels), data)
        device = _device(target, now)
        everything.append((target, device))
        _arrange(rooms, target, device)
    built = []
    for (site, room), parts in sorted(rooms.items()):
        racks = tuple(_rack(name, parts.racks[name]) for name in sorted(parts.racks, key=_natural))
        wet = ["leak" for leak in parts.floor_leaks if leak.wet]
        state = worst([*(r.state for r in racks), *parts.severities, *wet])
        built.append(
            Room(
                site,
                room,
                state,
                racks,
                tuple(d for _, d in parts.unracked),
                tuple(parts.floor_leaks),
                tuple(_ups(t, d) for t, d in parts.members if d.kind == "ups"),
                tuple(_cooling(t, d) for t, d in parts.members if d.kind == "cooling"),
            )
        )
    problems = sorted(
        (p for t, _ in everything for p in t.problems.values()),
        key=lambda p: (-RANK[p.severity], p.site, p.room, _natural(p.rack), p.device, p.sensor),
    )
    return Overview(
        generated_at=now,
        state=worst(r.state for r in built),
        rooms=tuple(built),
        problems=tuple(problems),
        devices=tuple(d for _, d in everything),
    )
