"""Normalised hardware readings: pure values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Quantity(StrEnum):
    """What a reading measures; each maps to one exported metric family."""

    TEMPERATURE = "temperature"
    HUMIDITY = "humidity"
    LEAK = "leak"
    FAN_SPEED = "fan_speed"
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


@dataclass(frozen=True, slots=True)
class Reading:
    """One normalised value read from a device, in base units.

    For STATUS readings `state` holds the State and `hw_type` the component kind; for
    UPS_POWER_SOURCE `state` holds the PowerSource; `value` is then unused (0).
    A reading with `limit_type` set is one of the device's own thresholds for `quantity`.
    """

    quantity: Quantity
    sensor: str
    value: float = 0.0
    location: Location | None = None
    limit_type: LimitType | None = None
    state: str | None = None
    hw_type: HwType | None = None


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
