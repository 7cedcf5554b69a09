"""Turn Redfish resources into normalised Readings. Pure: no I/O, and any JSON shape.

Sources, per chassis: ThermalSubsystem (ThermalMetrics, Fans, LeakDetection), or the
deprecated Thermal resource when there is none; PowerSubsystem (PowerSupplies), or the
deprecated Power; and the Sensors collection, which also holds the thresholds. A sensor
that several resources describe (a ThermalMetrics entry, a fan's SpeedPercent and the
Sensor they point to with DataSourceUri) is reported once. A component whose Status.State
is Absent, Disabled or offline, and a value that is null or not a number, is left out.

Every property is read through the typed accessors below, so a service that sends a string
where a number belongs loses that one value rather than the poll. Arrays inside a resource
are read up to MAX_ARRAY entries (collections are capped by the driver); what is left out
is said in the chassis' notes, which the driver reports as partial errors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from poller.model import LOCATED, HwType, LimitType, Location, Quantity, Reading, State
from poller.redfish.profile import LoadedRedfishProfile

JsonObject = Mapping[str, object]

# Status.State values of a component that is not there or not working by design.
GONE_STATES = frozenset(
    {"Absent", "Disabled", "UnavailableOffline", "StandbyOffline", "StandbySpare", "Deferring"}
)
HEALTH = {"OK": State.OK, "Warning": State.DEGRADED, "Critical": State.FAILED}
# Sensor.Thresholds (Redfish 2019.4+) -> limit type; the Fatal ones stand in for a missing
# Critical one.
THRESHOLDS = (
    ("UpperCritical", LimitType.HIGH_CRITICAL),
    ("UpperFatal", LimitType.HIGH_CRITICAL),
    ("UpperCaution", LimitType.HIGH_DEGRADED),
    ("LowerCaution", LimitType.LOW_DEGRADED),
    ("LowerCritical", LimitType.LOW_CRITICAL),
    ("LowerFatal", LimitType.LOW_CRITICAL),
)
# Thermal/Power members (the deprecated resources) name their thresholds flat.
LEGACY_THRESHOLDS = (
    ("UpperThresholdCritical", LimitType.HIGH_CRITICAL),
    ("UpperThresholdFatal", LimitType.HIGH_CRITICAL),
    ("UpperThresholdNonCritical", LimitType.HIGH_DEGRADED),
    ("LowerThresholdNonCritical", LimitType.LOW_DEGRADED),
    ("LowerThresholdCritical", LimitType.LOW_CRITICAL),
    ("LowerThresholdFatal", LimitType.LOW_CRITICAL),
)
# ThermalMetrics.TemperatureSummaryCelsius keys -> the PhysicalContext they stand for.
SUMMARY_CONTEXT = {"Intake": "Intake", "Exhaust": "Exhaust", "Ambient": "Room"}
# Kinds of Sensor resource read, by ReadingType, and by ReadingUnits when the type is missing
# (older services and the DMTF mockups often leave it out).
SENSOR_TYPES = {
    "Temperature": Quantity.TEMPERATURE,
    "Humidity": Quantity.HUMIDITY,
    "Rotational": Quantity.FAN_SPEED,
    "Voltage": Quantity.VOLTAGE,
    "Power": Quantity.POWER,
}
SENSOR_UNITS = {
    "Cel": Quantity.TEMPERATURE,
    "RPM": Quantity.FAN_SPEED,
    "{rev}/min": Quantity.FAN_SPEED,
    "V": Quantity.VOLTAGE,
    "W": Quantity.POWER,
}
STATUS_TYPES = {
    Quantity.TEMPERATURE: HwType.TEMPERATURE,
    Quantity.HUMIDITY: HwType.HUMIDITY,
    Quantity.FAN_SPEED: HwType.FAN,
}
# Percent quantities that hwpoller exports as ratios.
PERCENT = frozenset({Quantity.HUMIDITY})
# Entries read of one array inside a resource (Temperatures[], Fans[], Voltages[],
# TemperatureReadingsCelsius[]): as many as a collection's members (the driver's
# MAX_MEMBERS). A BMC has tens of sensors; one answering 100,000 Temperatures entries put
# 100,001 series into /metrics and cost ~1.8 CPU-s per poll on the event loop.
MAX_ARRAY = 512


def text(obj: object, key: str) -> str:
    """A string property, or "" when it is missing or not a string."""
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, str) else ""


def number(obj: object, key: str) -> float | None:
    """A finite numeric property, or None (null, missing, a string, a bool, NaN)."""
    value = obj.get(key) if isinstance(obj, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        result = float(value)
    except OverflowError:  # valid JSON, e.g. a 401-digit integer: no float holds it
        return None
    return result if math.isfinite(result) else None


def child(obj: object, key: str) -> JsonObject | None:
    """An object property, or None."""
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, Mapping) else None


def children(obj: object, key: str, notes: list[str] | None = None) -> list[JsonObject]:
    """The objects of an array property (anything else in it is ignored), at most MAX_ARRAY
    of them; when the array is longer, `notes` is told so."""
    value = obj.get(key) if isinstance(obj, Mapping) else None
    if not isinstance(value, list):
        return []
    if len(value) > MAX_ARRAY:
        if notes is not None:
            notes.append(f"{key}: {len(value)} entries, only the first {MAX_ARRAY} read")
        value = value[:MAX_ARRAY]
    return [v for v in value if isinstance(v, Mapping)]


def link(obj: object, key: str) -> str:
    """The @odata.id of a navigation property, or ""."""
    return text(child(obj, key), "@odata.id")


def present(obj: object) -> bool:
    """False for a component that is absent, disabled or offline."""
    return text(child(obj, "Status"), "State") not in GONE_STATES


def health(obj: object) -> State | None:
    """Status.Health as a State, or None when the service does not say."""
    return HEALTH.get(text(child(obj, "Status"), "Health"))


def resource_name(obj: object, fallback: str = "") -> str:
    """The stable name of a resource: its Id, else its Name (array members: MemberId is a
    bare index, so Name comes first for them), else the fallback."""
    for key in ("Id", "Name"):
        found = text(obj, key).strip()
        if found:
            return found
    return fallback


def member_name(obj: object, fallback: str) -> str:
    """The name of a member of a Thermal/Power array: Name (FanName), else MemberId."""
    for key in ("Name", "FanName", "MemberId"):
        found = text(obj, key).strip()
        if found:
            return found
    return fallback


def last_segment(path: str) -> str:
    """The last segment of a resource path ("/a/b/IntakeTemp" -> "IntakeTemp")."""
    return path.rstrip("/").rpartition("/")[2]


def thresholds(sensor: object) -> dict[LimitType, float]:
    """A Sensor's Thresholds as limits (the first of Critical/Fatal that is set wins)."""
    out: dict[LimitType, float] = {}
    found = child(sensor, "Thresholds")
    for key, limit_type in THRESHOLDS:
        value = number(child(found, key), "Reading")
        if value is not None and limit_type not in out:
            out[limit_type] = value
    return out


def legacy_thresholds(member: object) -> dict[LimitType, float]:
    """A Thermal/Power member's flat thresholds as limits."""
    out: dict[LimitType, float] = {}
    for key, limit_type in LEGACY_THRESHOLDS:
        value = number(member, key)
        if value is not None and limit_type not in out:
            out[limit_type] = value
    return out


def sensor_quantity(sensor: object) -> Quantity | None:
    """What a Sensor resource measures, when hwpoller exports it."""
    kind = text(sensor, "ReadingType")
    if kind:
        return SENSOR_TYPES.get(kind)
    return SENSOR_UNITS.get(text(sensor, "ReadingUnits"))


@dataclass
class ChassisData:
    """What was read of one chassis; None/empty for what it does not have."""

    chassis_id: str
    thermal_metrics: JsonObject | None = None
    fans: Sequence[JsonObject] = ()
    leak_detectors: Sequence[JsonObject] = ()
    power_supplies: Sequence[JsonObject] = ()
    sensors: Sequence[JsonObject] = ()
    thermal: JsonObject | None = None  # the deprecated Thermal resource
    power: JsonObject | None = None  # the deprecated Power resource


class _Out:
    """Readings of one chassis, with the profile that places them."""

    def __init__(self, profile: LoadedRedfishProfile) -> None:
        self.profile = profile
        self.readings: list[Reading] = []
        self.notes: list[str] = []  # what was left out (arrays cut at MAX_ARRAY)

    def value(
        self,
        quantity: Quantity,
        name: str,
        value: float | None,
        limits: Mapping[LimitType, float],
        names: Sequence[str],
        context: str,
    ) -> Location | None:
        """A value and its limits, located when the quantity is."""
        if value is None:
            return None
        scale = 0.01 if quantity in PERCENT else 1.0
        location = self.profile.locate(names, context) if quantity in LOCATED else None
        self.readings.append(Reading(quantity, name, value * scale, location=location))
        for limit_type, limit in sorted(limits.items()):
            self.readings.append(
                Reading(quantity, name, limit * scale, location=location, limit_type=limit_type)
            )
        return location

    def status(self, name: str, state: State | None, hw_type: HwType) -> None:
        """A hw_status reading, when the service states the component's health."""
        if state is not None:
            self.readings.append(Reading(Quantity.STATUS, name, state=state.value, hw_type=hw_type))


def _ids(objs: Iterable[JsonObject]) -> dict[str, JsonObject]:
    return {text(o, "@odata.id"): o for o in objs if text(o, "@odata.id")}


def chassis_readings(
    data: ChassisData, profile: LoadedRedfishProfile
) -> tuple[list[Reading], list[str]]:
    """Every reading of one chassis, and notes on what was left out of it."""
    out = _Out(profile)
    sensors = _ids(s for s in data.sensors if present(s))
    used: set[str] = set()
    _thermal_metrics(data.thermal_metrics, sensors, used, out)
    for fan in data.fans:
        _fan(fan, sensors, used, out)
    for detector in data.leak_detectors:
        _leak(detector, out)
    for supply in data.power_supplies:
        if present(supply):
            name = resource_name(supply, last_segment(text(supply, "@odata.id")))
            out.status(name, health(supply), HwType.POWER_SUPPLY)
    for path, sensor in sensors.items():
        if path not in used:
            _sensor(sensor, out)
    if data.thermal is not None:
        _legacy_thermal(data.thermal, out)
    if data.power is not None:
        _legacy_power(data.power, out)
    return out.readings, out.notes


def _temperature(
    name: str,
    value: float | None,
    sensor: JsonObject | None,
    names: Sequence[str],
    context: str,
    out: _Out,
) -> None:
    limits = thresholds(sensor) if sensor is not None else {}
    if sensor is not None and not context:
        context = text(sensor, "PhysicalContext")
    if out.value(Quantity.TEMPERATURE, name, value, limits, names, context) is not None:
        out.status(name, health(sensor) if sensor is not None else None, HwType.TEMPERATURE)


def _thermal_metrics(
    metrics: JsonObject | None, sensors: Mapping[str, JsonObject], used: set[str], out: _Out
) -> None:
    """ThermalMetrics: the temperatures array, then summary values not already read."""
    if metrics is None:
        return
    seen: set[str] = set()
    entries = [
        (e, text(e, "DeviceName"), text(e, "PhysicalContext"))
        for e in children(metrics, "TemperatureReadingsCelsius", out.notes)
    ]
    summary = child(metrics, "TemperatureSummaryCelsius")
    for key, context in SUMMARY_CONTEXT.items():
        entry = child(summary, key)
        if entry is not None:
            entries.append((entry, key, context))
    for entry, device_name, context in entries:
        source = text(entry, "DataSourceUri")
        if source and source in seen:
            continue
        sensor = sensors.get(source) if source else None
        if source:
            seen.add(source)
            if source in used:
                continue
            used.add(source)
        if sensor is not None:
            name = resource_name(sensor, last_segment(source))
            names = [name, text(sensor, "Name"), device_name]
        else:
            name = device_name or (last_segment(source) if source else "")
            names = [name]
        if not name:
            continue
        # ThermalMetrics is the thermal subsystem's own view: its value is used, the
        # Sensor it points to adds thresholds, health and the place.
        _temperature(name, number(entry, "Reading"), sensor, names, context, out)


def _fan(fan: JsonObject, sensors: Mapping[str, JsonObject], used: set[str], out: _Out) -> None:
    if not present(fan):
        return
    name = resource_name(fan, last_segment(text(fan, "@odata.id")))
    speed = child(fan, "SpeedPercent")
    source = text(speed, "DataSourceUri")
    sensor = sensors.get(source) if source else None
    if source:
        used.add(source)
    state = health(fan)
    rpm = number(speed, "SpeedRPM")
    limits: dict[LimitType, float] = {}
    if sensor is not None and sensor_quantity(sensor) == Quantity.FAN_SPEED:
        limits = thresholds(sensor)
        if rpm is None:
            rpm = number(sensor, "Reading")
    out.value(Quantity.FAN_SPEED, name, rpm, limits, [name], "")
    percent = number(speed, "Reading")
    if percent is not None:
        out.readings.append(Reading(Quantity.FAN_SPEED_RATIO, name, percent / 100.0))
    low = limits.get(LimitType.LOW_CRITICAL)
    if rpm is not None and low is not None and rpm < low:
        state = State.FAILED  # stopped below its own critical limit, whatever Health says
    out.status(name, state, HwType.FAN)


def _leak(detector: JsonObject, out: _Out) -> None:
    if not present(detector):
        return
    name = resource_name(detector, last_segment(text(detector, "@odata.id")))
    names = [name, text(detector, "Name")]
    context = text(detector, "PhysicalContext")
    state = text(detector, "DetectorState")
    if state in HEALTH:
        leaking = 1.0 if state in ("Warning", "Critical") else 0.0
        out.value(Quantity.LEAK, name, leaking, {}, names, context)
    out.status(name, health(detector), HwType.LEAK)


def _sensor(sensor: JsonObject, out: _Out) -> None:
    quantity = sensor_quantity(sensor)
    if quantity is None:
        return
    name = resource_name(sensor, last_segment(text(sensor, "@odata.id")))
    names = [name, text(sensor, "Name")]
    limits = thresholds(sensor) if quantity in STATUS_TYPES else {}
    value = number(sensor, "Reading")
    context = text(sensor, "PhysicalContext")
    if out.value(quantity, name, value, limits, names, context) is None:
        return
    hw_type = STATUS_TYPES.get(quantity)
    if hw_type is not None:
        state = health(sensor)
        low = limits.get(LimitType.LOW_CRITICAL)
        if quantity == Quantity.FAN_SPEED and value is not None and low is not None and value < low:
            state = State.FAILED
        out.status(name, state, hw_type)


def _legacy_thermal(thermal: JsonObject, out: _Out) -> None:
    """The deprecated Thermal resource: Temperatures and Fans arrays."""
    for index, member in enumerate(children(thermal, "Temperatures", out.notes)):
        if not present(member):
            continue
        name = member_name(member, f"Temperature {index}")
        value = number(member, "ReadingCelsius")
        context = text(member, "PhysicalContext")
        limits = legacy_thresholds(member)
        if out.value(Quantity.TEMPERATURE, name, value, limits, [name], context) is not None:
            out.status(name, health(member), HwType.TEMPERATURE)
    for index, member in enumerate(children(thermal, "Fans", out.notes)):
        if not present(member):
            continue
        name = member_name(member, f"Fan {index}")
        value = number(member, "Reading")
        state = health(member)
        units = text(member, "ReadingUnits") or "RPM"
        if units == "RPM":
            limits = legacy_thresholds(member)
            out.value(Quantity.FAN_SPEED, name, value, limits, [name], "")
            low = limits.get(LimitType.LOW_CRITICAL)
            if value is not None and low is not None and value < low:
                state = State.FAILED
        elif units == "Percent" and value is not None:
            out.readings.append(Reading(Quantity.FAN_SPEED_RATIO, name, value / 100.0))
        out.status(name, state, HwType.FAN)


def _legacy_power(power: JsonObject, out: _Out) -> None:
    """The deprecated Power resource: PowerSupplies, PowerControl and Voltages arrays."""
    for index, member in enumerate(children(power, "PowerSupplies", out.notes)):
        if present(member):
            out.status(
                member_name(member, f"Power Supply {index}"), health(member), HwType.POWER_SUPPLY
            )
    for index, member in enumerate(children(power, "PowerControl", out.notes)):
        if present(member):
            name = member_name(member, f"Power Control {index}")
            out.value(Quantity.POWER, name, number(member, "PowerConsumedWatts"), {}, [name], "")
    for index, member in enumerate(children(power, "Voltages", out.notes)):
        if present(member):
            name = member_name(member, f"Voltage {index}")
            out.value(Quantity.VOLTAGE, name, number(member, "ReadingVolts"), {}, [name], "")


def disambiguate(per_chassis: Sequence[tuple[str, list[Reading]]]) -> list[Reading]:
    """All chassis' readings; a sensor name that two chassis share gets its chassis' Id
    in front ("Blade1/Inlet"), so that neither overwrites the other."""
    owners: dict[tuple[str, str], set[str]] = {}
    for chassis_id, readings in per_chassis:
        for r in readings:
            owners.setdefault((r.quantity.value, r.sensor), set()).add(chassis_id)
    out: list[Reading] = []
    for chassis_id, readings in per_chassis:
        for r in readings:
            shared = len(owners[(r.quantity.value, r.sensor)]) > 1
            out.append(r._replace(sensor=f"{chassis_id}/{r.sensor}") if shared else r)
    return out
