"""What /api/room returns: rooms, racks, devices, leaks and problems as frozen plain values.

poller.room_model builds them from the store; `Overview.as_dict()` is the JSON. Field names
are the endpoint's public interface (docs/statuspage.md lists them): add, do not rename.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

# States of a rack, a device or a problem, least to most urgent. A rack nobody can see into
# (unknown) outranks a warning: it might be under water.
STATES = ("ok", "warning", "unknown", "critical", "leak")
RANK = {state: i for i, state in enumerate(STATES)}


def worst(states: Iterable[str]) -> str:
    """The most urgent of some states; ok for none."""
    return max(states, key=RANK.__getitem__, default="ok")


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
    # What the page writes as its state: the kind while all is well, else its state, or for
    # a cooling unit "failed"/"alarm" when its own alarms are why; down, pending.
    label: str
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
