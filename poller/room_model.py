"""The room at a glance: the store's latest results arranged as rooms, racks and problems.

Pure: reads TargetViews (never a device) and returns plain values for the status page and its
JSON endpoint. A rack's place comes from its targets' `site`/`room`/`rack` labels; racks are
laid out in a row, ordered by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from poller.model import DeviceData, HwType, LimitType, Location, PowerSource, Quantity, Reading
from poller.store import TargetView

# States of a rack, a device or a problem, least to most urgent. A rack nobody can see into
# (unknown) outranks a warning: it might be under water.
STATES = ("ok", "warning", "unknown", "critical", "leak")
_RANK = {state: i for i, state in enumerate(STATES)}

# Inlet limits for sensors that report none: ASHRAE A1's recommended maximum and allowable
# maximum, the same numbers as the InletTemperatureHigh alerts.
DEFAULT_INLET_LIMITS = (27.0, 32.0)
# Relative humidity outside 20..80 % is a warning (HumidityOutOfRange) for sensors without
# limits of their own.
DEFAULT_HUMIDITY_RANGE = (0.2, 0.8)
# The UPS alerts' thresholds: runtime under 10 min is critical, charge under 50 % a warning.
UPS_RUNTIME_CRITICAL = 600.0
UPS_CHARGE_WARNING = 0.5
NO_ROOM = ""


def worst(states: Iterable[str]) -> str:
    """The most urgent of some states; ok for none."""
    return max(states, key=_RANK.__getitem__, default="ok")


def _natural(text: str) -> list[Any]:
    """Sort key putting rack 2 before rack 10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong now."""

    severity: str
    device: str
    sensor: str
    text: str
    site: str
    room: str
    rack: str


@dataclass(frozen=True, slots=True)
class Leak:
    """One leak sensor."""

    device: str
    sensor: str
    wet: bool


@dataclass(frozen=True, slots=True)
class Inlet:
    """The hottest inlet reading of a device or rack, with the limits it was judged by."""

    celsius: float
    state: str
    device: str
    sensor: str
    warning: float
    critical: float
    own_limits: bool  # False: DEFAULT_INLET_LIMITS


@dataclass(frozen=True, slots=True)
class Device:
    """One target as the page shows it."""

    name: str
    protocol: str
    kind: str  # server, ups, cooling, environment, device
    answer: str  # up, down, pending
    state: str
    rack: str
    last_success_age: float | None  # seconds since it last answered; None: never
    reason: str
    message: str
    vendor: str
    model: str
    inlet: Inlet | None


@dataclass(frozen=True, slots=True)
class Rack:
    """One rack: its devices, its hottest inlet, its humidity and the leak sensors under it."""

    name: str
    state: str
    inlet: Inlet | None
    humidity: float | None  # 0..1, highest of its devices' readings
    devices: tuple[Device, ...]
    leaks: tuple[Leak, ...]


@dataclass(frozen=True, slots=True)
class Ups:
    """One UPS: where its output comes from and how long the battery lasts."""

    device: str
    state: str
    source: str | None
    charge: float | None  # 0..1
    runtime_seconds: float | None
    load: float | None  # 0..1


@dataclass(frozen=True, slots=True)
class Alarm:
    """One hw_status reading of a cooling unit."""

    sensor: str
    state: str


@dataclass(frozen=True, slots=True)
class Cooling:
    """One cooling unit: its alarms and air temperatures."""

    device: str
    state: str
    alarms: tuple[Alarm, ...]
    supply_celsius: float | None
    return_celsius: float | None
    humidity: float | None


@dataclass(frozen=True, slots=True)
class Room:
    """One room: racks in a row, room-level devices, floor leaks, power and cooling."""

    site: str
    room: str
    state: str
    racks: tuple[Rack, ...]
    unracked: tuple[Device, ...]  # devices with no rack label (a CRAC, a room sensor)
    floor_leaks: tuple[Leak, ...]  # leak sensors of unracked devices
    ups: tuple[Ups, ...]
    cooling: tuple[Cooling, ...]


@dataclass(frozen=True, slots=True)
class Overview:
    """Everything the status page shows."""

    generated_at: float
    state: str
    rooms: tuple[Room, ...]
    problems: tuple[Problem, ...]
    devices: tuple[Device, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (what /api/room returns)."""
        return asdict(self)


@dataclass
class _Target:
    """Working state for one view while the overview is built."""

    view: TargetView
    labels: dict[str, str]
    data: DeviceData | None
    problems: dict[tuple[str, str], Problem] = field(default_factory=dict)

    def add(self, severity: str, sensor: str, text: str) -> None:
        """Record a problem; of several about one sensor the most urgent stays."""
        key = (self.view.name, sensor)
        old = self.problems.get(key)
        if old is None or _RANK[severity] > _RANK[old.severity]:
            self.problems[key] = Problem(
                severity,
                self.view.name,
                sensor,
                text,
                self.labels.get("site", ""),
                self.labels.get("room", NO_ROOM),
                self.labels.get("rack", ""),
            )

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


def _inlet(target: _Target) -> Inlet | None:
    """The device's hottest inlet, judged by its own limits or DEFAULT_INLET_LIMITS."""
    found: list[Inlet] = []
    for reading in target.readings(Quantity.TEMPERATURE):
        if reading.location != Location.INLET:
            continue
        limits = target.limits(reading)
        own = LimitType.HIGH_DEGRADED in limits or LimitType.HIGH_CRITICAL in limits
        if not own:
            limits = {
                **limits,
                LimitType.HIGH_DEGRADED: DEFAULT_INLET_LIMITS[0],
                LimitType.HIGH_CRITICAL: DEFAULT_INLET_LIMITS[1],
            }
        state, _ = _judge(reading.value, limits)
        warning = limits.get(LimitType.HIGH_DEGRADED, limits.get(LimitType.HIGH_CRITICAL, 0.0))
        critical = limits.get(LimitType.HIGH_CRITICAL, warning)
        found.append(
            Inlet(reading.value, state, target.view.name, reading.sensor, warning, critical, own)
        )
    return _hottest(found)


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
            limits = target.limits(reading)
            if quantity == Quantity.TEMPERATURE and reading.location == Location.INLET:
                limits.setdefault(LimitType.HIGH_DEGRADED, DEFAULT_INLET_LIMITS[0])
                limits.setdefault(LimitType.HIGH_CRITICAL, DEFAULT_INLET_LIMITS[1])
            if quantity == Quantity.HUMIDITY and not limits:
                limits = {
                    LimitType.LOW_DEGRADED: DEFAULT_HUMIDITY_RANGE[0],
                    LimitType.HIGH_DEGRADED: DEFAULT_HUMIDITY_RANGE[1],
                }
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
            target.add("critical", "power source", text)
        elif reading.state == PowerSource.BYPASS:
            target.add("warning", "power source", "on bypass")
    for reading in target.readings(Quantity.BATTERY_TIME_LEFT):
        if reading.value < UPS_RUNTIME_CRITICAL:
            target.add("critical", reading.sensor, f"{reading.value / 60:.0f} min runtime left")
    for reading in target.readings(Quantity.BATTERY_CHARGE):
        if reading.value < UPS_CHARGE_WARNING:
            target.add("warning", reading.sensor, f"battery {reading.value * 100:.0f} % charged")
    if target.data is not None and target.data.partial_errors:
        count = len(target.data.partial_errors)
        target.add("warning", "", f"partly read: {count} part(s) of the poll failed")


def _kind(target: _Target) -> str:
    if any(target.readings(Quantity.UPS_POWER_SOURCE)):
        return "ups"
    statuses = target.readings(Quantity.STATUS)
    if any(r.hw_type == HwType.COOLING for r in statuses):
        return "cooling"
    if target.view.protocol == "ipmi":
        return "server"
    if target.readings(Quantity.LEAK) or target.readings(Quantity.HUMIDITY):
        return "environment"
    return "device"


def _device(target: _Target, now: float) -> Device:
    view = target.view
    last = view.last
    if last is None:
        answer, state = "pending", "unknown"
        target.add("unknown", "", "not polled yet")
    elif not last.success:
        answer, state = "down", "warning"
        target.add("warning", "", f"not answering ({last.reason})")
    else:
        answer = "up"
        _check_readings(target)
        state = worst(p.severity for p in target.problems.values())
    info = target.data.info if target.data is not None else None
    return Device(
        name=view.name,
        protocol=view.protocol,
        kind=_kind(target),
        answer=answer,
        state=state,
        rack=target.labels.get("rack", ""),
        last_success_age=max(0.0, now - view.last_success_at) if view.last_success_at else None,
        reason=last.reason if last is not None and not last.success else "",
        message=last.message if last is not None and not last.success else "",
        vendor=info.vendor if info else "",
        model=info.model if info else "",
        inlet=_inlet(target),
    )


def _leaks(target: _Target) -> list[Leak]:
    return [
        Leak(target.view.name, r.sensor, r.value >= 0.5) for r in target.readings(Quantity.LEAK)
    ]


def _rack(name: str, members: list[tuple[_Target, Device]]) -> Rack:
    devices = tuple(d for _, d in members)
    leaks = tuple(leak for t, _ in members for leak in _leaks(t))
    answering = [d for d in devices if d.answer == "up"]
    if not answering:
        state = "unknown"  # nothing answers: never green
    elif any(leak.wet for leak in leaks):
        state = "leak"
    else:
        state = worst(d.state for d in answering)
        if len(answering) < len(devices):
            state = worst((state, "warning"))  # some devices down or not yet polled
    humidity = [r.value for t, _ in members for r in t.readings(Quantity.HUMIDITY)]
    return Rack(
        name,
        state,
        _hottest(d.inlet for d in answering),
        max(humidity, default=None),
        devices,
        leaks,
    )


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
    rooms: dict[tuple[str, str], list[tuple[_Target, Device]]] = {}
    everything: list[tuple[_Target, Device]] = []
    for view in views:
        data = view.last.data if view.last is not None and view.last.success else None
        target = _Target(view, dict(view.labels), data)
        pair = (target, _device(target, now))
        everything.append(pair)
        key = (target.labels.get("site", ""), target.labels.get("room", NO_ROOM))
        rooms.setdefault(key, []).append(pair)
    built = []
    for (site, room), members in sorted(rooms.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        by_rack: dict[str, list[tuple[_Target, Device]]] = {}
        unracked = []
        for target, device in members:
            if device.rack:
                by_rack.setdefault(device.rack, []).append((target, device))
            else:
                unracked.append((target, device))
        racks = tuple(_rack(name, by_rack[name]) for name in sorted(by_rack, key=_natural))
        floor = tuple(leak for t, _ in unracked for leak in _leaks(t))
        state = worst(
            [r.state for r in racks]
            + [d.state for _, d in unracked]
            + ["leak" for leak in floor if leak.wet]
        )
        built.append(
            Room(
                site,
                room,
                state,
                racks,
                tuple(d for _, d in unracked),
                floor,
                tuple(_ups(t, d) for t, d in members if d.kind == "ups"),
                tuple(_cooling(t, d) for t, d in members if d.kind == "cooling"),
            )
        )
    problems = sorted(
        (p for t, _ in everything for p in t.problems.values()),
        key=lambda p: (-_RANK[p.severity], p.site, p.room, _natural(p.rack), p.device, p.sensor),
    )
    return Overview(
        generated_at=now,
        state=worst(r.state for r in built),
        rooms=tuple(built),
        problems=tuple(problems),
        devices=tuple(d for _, d in everything),
    )
