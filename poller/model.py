"""Normalised hardware readings: pure values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple


class Quantity(StrEnum):
    """What a reading measures; each maps to one exported metric family."""

    TEMPERATURE = "temperature"
    HUMIDITY = "humidity"
    LEAK = "leak"
    FAN_SPEED = "fan_speed"
    FAN_SPEED_RATIO = "fan_speed_ratio"
    STATUS = "status"
    BATTERY_CHARGE = "battery_charge"
    BATTERY_TIME_LEFT = "battery_time_left"
    UPS_POWER_SOURCE = "ups_power_source"
    UPS_LOAD = "ups_load"
    VOLTAGE = "voltage"
    POWER = "power"


class Location(StrEnum):
    """Where a temperature/humidity/leak sensor sits."""

    INLET = "inlet"
    EXHAUST = "exhaust"
    AMBIENT = "ambient"
    SUPPLY = "supply"
    RETURN = "return"
    CPU = "cpu"
    BATTERY = "battery"
    FLOOR = "floor"
    OTHER = "other"


class State(StrEnum):
    """Health state of a component, exported as the hw_status StateSet."""

    OK = "ok"
    DEGRADED = "degraded"
    FAILED = "failed"


class HwType(StrEnum):
    """Kind of component a hw_status series describes."""

    TEMPERATURE = "temperature"
    HUMIDITY = "humidity"
    LEAK = "leak"
    FAN = "fan"
    POWER_SUPPLY = "power_supply"
    BATTERY = "battery"
    COOLING = "cooling"
    UPS = "ups"
    CONTACT = "contact"
    SYSTEM = "system"


class PowerSource(StrEnum):
    """What a UPS output is fed from, exported as the hw_ups_power_source StateSet."""

    UTILITY = "utility"
    BATTERY = "battery"
    BYPASS = "bypass"
    NONE = "none"
    OTHER = "other"


class LimitType(StrEnum):
    """OpenTelemetry hardware limit types for a device's own thresholds."""

    LOW_CRITICAL = "low.critical"
    LOW_DEGRADED = "low.degraded"
    HIGH_DEGRADED = "high.degraded"
    HIGH_CRITICAL = "high.critical"


# Quantities that carry a location label.
LOCATED = frozenset({Quantity.TEMPERATURE, Quantity.HUMIDITY, Quantity.LEAK})
# Quantities that may have device thresholds exported as *_limit_* metrics.
LIMITED = frozenset({Quantity.TEMPERATURE, Quantity.HUMIDITY, Quantity.FAN_SPEED})


# Values a working sensor can physically report, in base units. A reading outside its range
# is a decoding error, a filler (-273, 65535) or a hostile device: omitted and counted,
# never exported. Limits (thresholds) are checked against the same ranges.
PHYSICAL_RANGE: dict[Quantity, tuple[float, float]] = {
    Quantity.TEMPERATURE: (-60.0, 150.0),
    Quantity.HUMIDITY: (0.0, 1.0),
    Quantity.LEAK: (0.0, 1.0),
    Quantity.FAN_SPEED: (0.0, 100_000.0),
    Quantity.FAN_SPEED_RATIO: (0.0, 1.0),
    Quantity.BATTERY_CHARGE: (0.0, 1.0),
    Quantity.BATTERY_TIME_LEFT: (0.0, 90 * 86_400.0),
    Quantity.UPS_LOAD: (0.0, 10.0),
    # DC plants run at -48 V; nothing in a server room exceeds a medium-voltage feed.
    Quantity.VOLTAGE: (-600.0, 100_000.0),
    Quantity.POWER: (0.0, 100_000_000.0),
}


class Reading(NamedTuple):
    """One normalised value read from a device, in base units.

    For STATUS readings `state` holds the State and `hw_type` the component kind; for
    UPS_POWER_SOURCE `state` holds the PowerSource; `value` is then unused (0).
    A reading with `limit_type` set is one of the device's own thresholds for `quantity`.

    Immutable. A NamedTuple rather than a frozen dataclass: a poll builds one per reading,
    and a tuple is built in C (a third of the frozen dataclass's cost). `_replace` makes a
    changed copy.
    """

    quantity: Quantity
    sensor: str
    value: float = 0.0
    location: Location | None = None
    limit_type: LimitType | None = None
    state: str | None = None
    hw_type: HwType | None = None

    @property
    def series(self) -> tuple[str, str, str, str, str]:
        """The identity of the exported series: two readings with one identity would be
        duplicate series (UPS load and power source carry no sensor label)."""
        # The members themselves, not .value: they are str (StrEnum) and equal to their
        # values, and an enum's .value is a slow descriptor on a path run per reading.
        quantity = self.quantity
        return (
            quantity,
            "" if quantity in UNNAMED else self.sensor,
            self.location or "",
            self.limit_type or "",
            (self.hw_type or "") if quantity is _STATUS else "",
        )

    @property
    def kind(self) -> tuple[Quantity, HwType | None, Location | None]:
        """What a reading is about, regardless of sensor: the unit of supersession."""
        return (self.quantity, self.hw_type, self.location)


# Quantities exported without a sensor label: one per device.
UNNAMED = frozenset({Quantity.UPS_LOAD, Quantity.UPS_POWER_SOURCE})
_STATUS = Quantity.STATUS


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Identity of a polled device, exported as hw_device_info."""

    vendor: str = ""
    model: str = ""
    firmware: str = ""
    profile: str = ""
    # Protocol as spoken, e.g. "snmpv2c", so that insecure versions are visible; "" = the
    # target's protocol.
    protocol: str = ""


@dataclass(frozen=True, slots=True)
class DeviceData:
    """What one successful poll of a device produced."""

    info: DeviceInfo
    readings: tuple[Reading, ...]
    # Parts of the poll that failed while others succeeded, e.g. a table that timed out.
    partial_errors: tuple[str, ...] = ()
    # Readings left out of this poll, by reason (duplicate, out_of_range), with counts.
    dropped: tuple[tuple[str, int], ...] = ()
    # Each applied profile with the number of readings it contributed, in precedence order.
    sources: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class PollResult:
    """The outcome of one poll of one target, as kept in the store."""

    target: str
    protocol: str
    success: bool
    duration_seconds: float
    finished_at: float  # wall-clock seconds since the epoch
    data: DeviceData | None = None
    reason: str = ""  # short fixed error reason when success is False
    message: str = ""  # human-readable detail; never contains a secret
    labels: dict[str, str] = field(default_factory=dict)
