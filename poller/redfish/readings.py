"""Turn Redfish resources into normalised Readings. Pure: no I/O, and any JSON shape.

Sources, per chassis: ThermalSubsystem (ThermalMetrics, Fans, LeakDetection), or the
deprecated Thermal resource when there is none; PowerSubsystem (PowerSupplies and their
PowerSupplyMetrics), or the deprecated Power (poller.redfish.power); and the Sensors
collection, which also holds the thresholds. A sensor that several resources describe (a
ThermalMetrics entry, a fan's SpeedPercent, a supply's metrics and the Sensor they point
to with DataSourceUri; a Sensor and a Thermal entry of the same Name) is reported once,
and a summary (TemperatureSummaryCelsius) only when no sensor gives its value. A
component whose Status.State is Absent, Disabled or offline, and a value that is null or
not a number, is left out.

Parts are named by what the BMC calls them (Name), made unique within their collection
(poller.redfish.access.unique_names): two power supplies both called
"HpeServerPowerSupply" are two series, never one that hides the other. Arrays inside a
resource are read up to MAX_ARRAY entries (collections are capped by the driver); what is
left out is said in the chassis' notes, which the driver reports as partial errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from poller.model import HwType, LimitType, Location, Quantity, Reading, State
from poller.redfish import power
from poller.redfish.access import (
    MAX_ARRAY,
    JsonObject,
    Out,
    child,
    children,
    first_number,
    health,
    last_segment,
    legacy_thresholds,
    link,
    named_members,
    number,
    part_key,
    present,
    resource_name,
    text,
    thresholds,
    unique_names,
)
from poller.redfish.profile import LoadedRedfishProfile

__all__ = [
    "MAX_ARRAY",
    "ChassisData",
    "chassis_readings",
    "child",
    "disambiguate",
    "link",
    "present",
    "sensor_quantity",
    "text",
]

# ThermalMetrics.TemperatureSummaryCelsius keys -> the PhysicalContext they stand for.
SUMMARY_CONTEXT = {"Intake": "Intake", "Exhaust": "Exhaust", "Ambient": "Room"}
# Where air temperatures are, the ones a chassis summary repeats: a summary "Ambient" that
# reads what the inlet sensor reads is that sensor again (iLO's "Ambient" is its inlet).
AIR = frozenset({Location.INLET, Location.EXHAUST, Location.AMBIENT})
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
# A percent Sensor is many things (battery health, humidity, a fan); it is a fan speed
# when it sits on a fan (or a fan's SpeedPercent points to it).
PERCENT_KINDS = frozenset({"Percent", "%"})
STATUS_TYPES = {
    Quantity.TEMPERATURE: HwType.TEMPERATURE,
    Quantity.HUMIDITY: HwType.HUMIDITY,
    Quantity.FAN_SPEED: HwType.FAN,
    Quantity.FAN_SPEED_RATIO: HwType.FAN,
}
# Fan speed units of the deprecated Thermal.Fans[] (ReadingUnits; the pre-1.0 HPE form
# says Units), and the properties holding the reading, newest first.
FAN_VALUES = ("Reading", "CurrentReading")
FAN_UNITS = ("ReadingUnits", "Units")


def _percent(sensor: object) -> bool:
    return (text(sensor, "ReadingType") or text(sensor, "ReadingUnits")) in PERCENT_KINDS


def sensor_quantity(sensor: object) -> Quantity | None:
    """What a Sensor resource measures, when hwpoller exports it."""
    kind = text(sensor, "ReadingType")
    if kind in PERCENT_KINDS or (not kind and text(sensor, "ReadingUnits") in PERCENT_KINDS):
        return Quantity.FAN_SPEED_RATIO if text(sensor, "PhysicalContext") == "Fan" else None
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
    # PowerSupplyMetrics by the @odata.id of the power supply they belong to.
    supply_metrics: Mapping[str, JsonObject] = field(default_factory=dict)
    sensors: Sequence[JsonObject] = ()
    thermal: JsonObject | None = None  # the deprecated Thermal resource
    power: JsonObject | None = None  # the deprecated Power resource


def _ids(objs: Iterable[JsonObject]) -> dict[str, JsonObject]:
    return {text(o, "@odata.id"): o for o in objs if text(o, "@odata.id")}


def _names(members: Sequence[JsonObject]) -> list[str]:
    """Unique names of a collection's members (resources: Name, else Id, else path)."""
    return unique_names(
        [resource_name(m, last_segment(text(m, "@odata.id"))) for m in members],
        [part_key(m) for m in members],
    )


def chassis_readings(
    data: ChassisData, profile: LoadedRedfishProfile
) -> tuple[list[Reading], list[str]]:
    """Every reading of one chassis, and notes on what was left out of it."""
    out = Out(profile)
    all_sensors = _ids(data.sensors)
    # Names over the whole collection, absent sensors too: one going absent must not
    # rename another.
    sensor_names = dict(zip(all_sensors, _names(list(all_sensors.values())), strict=True))
    sensors = {path: s for path, s in all_sensors.items() if present(s)}
    used: set[str] = set()
    summaries = _thermal_metrics(data.thermal_metrics, sensors, sensor_names, used, out)
    for name, fan in zip(_names(data.fans), data.fans, strict=True):
        _fan(name, fan, sensors, used, out)
    for name, detector in zip(_names(data.leak_detectors), data.leak_detectors, strict=True):
        _leak(name, detector, out)
    power.supplies(data.power_supplies, data.supply_metrics, sensors, used, out)
    for path, sensor in sensors.items():
        if path not in used:
            _sensor(sensor_names[path], sensor, out)
    if data.thermal is not None:
        _legacy_thermal(data.thermal, out)
    if data.power is not None:
        power.legacy_power(data.power, out)
    # Last: a summary is given only when none of the sensors above gave its value.
    _summaries(summaries, sensors, used, out)
    return out.readings, out.notes


def _temperature(
    name: str,
    value: float | None,
    sensor: JsonObject | None,
    names: Sequence[str],
    context: str,
    out: Out,
) -> None:
    limits = thresholds(sensor) if sensor is not None else {}
    if sensor is not None and not context:
        context = text(sensor, "PhysicalContext")
    if out.value(Quantity.TEMPERATURE, name, value, limits, names, context):
        out.status(name, health(sensor) if sensor is not None else None, HwType.TEMPERATURE)


def _thermal_metrics(
    metrics: JsonObject | None,
    sensors: Mapping[str, JsonObject],
    sensor_names: Mapping[str, str],
    used: set[str],
    out: Out,
) -> list[tuple[str, JsonObject]]:
    """ThermalMetrics' temperatures array; its summary entries are returned for later."""
    if metrics is None:
        return []
    entries = children(metrics, "TemperatureReadingsCelsius", out.notes)
    own = unique_names([text(e, "DeviceName").strip() for e in entries], [""] * len(entries))
    for device_name, entry in zip(own, entries, strict=True):
        source = text(entry, "DataSourceUri")
        if source and source in used:
            continue  # two entries for one sensor
        sensor = sensors.get(source) if source else None
        if source:
            used.add(source)
        if sensor is not None:
            name = sensor_names[source]
            names = [name, text(sensor, "Id"), device_name]
        else:
            name = device_name or (last_segment(source) if source else "")
            names = [name]
        if name:
            # ThermalMetrics is the thermal subsystem's own view: its value is used, the
            # Sensor it points to adds thresholds, health and the place.
            context = text(entry, "PhysicalContext")
            _temperature(name, number(entry, "Reading"), sensor, names, context, out)
    summary = child(metrics, "TemperatureSummaryCelsius")
    return [(key, found) for key in SUMMARY_CONTEXT if (found := child(summary, key))]


def _summaries(
    summaries: Sequence[tuple[str, JsonObject]],
    sensors: Mapping[str, JsonObject],
    used: set[str],
    out: Out,
) -> None:
    """TemperatureSummaryCelsius entries that no sensor of the chassis gave already: a
    summary is what the BMC makes of its sensors, so it stands in for them only when
    hwpoller has none of its place (or of its value: a summary repeating an air sensor)."""
    for key, entry in summaries:
        source = text(entry, "DataSourceUri")
        if source and (source in used or source in sensors):
            continue  # its Sensor is read itself
        value = number(entry, "Reading")
        if value is None:
            continue
        context = SUMMARY_CONTEXT[key]
        location = out.profile.locate([key], context)
        if any(
            place == location or (place in AIR and seen == value)
            for place, seen in out.temperatures
        ):
            continue
        _temperature(key, value, None, [key], context, out)


def _fan(
    name: str, fan: JsonObject, sensors: Mapping[str, JsonObject], used: set[str], out: Out
) -> None:
    """A ThermalSubsystem fan: SpeedPercent.SpeedRPM and .Reading (percent), or the
    Sensor its DataSourceUri names when the excerpt leaves a value out."""
    if not present(fan):
        return
    speed = child(fan, "SpeedPercent")
    source = text(speed, "DataSourceUri")
    sensor = sensors.get(source) if source else None
    if source:
        used.add(source)
    state = health(fan)
    rpm = number(speed, "SpeedRPM")
    percent = number(speed, "Reading")
    limits: dict[LimitType, float] = {}
    if sensor is not None and sensor_quantity(sensor) == Quantity.FAN_SPEED:
        limits = thresholds(sensor)
        if rpm is None:
            rpm = number(sensor, "Reading")
    elif sensor is not None and percent is None and _percent(sensor):
        percent = number(sensor, "Reading")
    out.value(Quantity.FAN_SPEED, name, rpm, limits, [name], "")
    out.value(Quantity.FAN_SPEED_RATIO, name, percent, {}, [name], "")
    low = limits.get(LimitType.LOW_CRITICAL)
    if rpm is not None and low is not None and rpm < low:
        state = State.FAILED  # stopped below its own critical limit, whatever Health says
    out.status(name, state, HwType.FAN)


def _leak(name: str, detector: JsonObject, out: Out) -> None:
    if not present(detector):
        return
    names = [name, text(detector, "Id")]
    context = text(detector, "PhysicalContext")
    state = text(detector, "DetectorState")
    if state in ("OK", "Warning", "Critical"):
        leaking = 1.0 if state in ("Warning", "Critical") else 0.0
        out.value(Quantity.LEAK, name, leaking, {}, names, context)
    out.status(name, health(detector), HwType.LEAK)


def _sensor(name: str, sensor: JsonObject, out: Out) -> None:
    quantity = sensor_quantity(sensor)
    if quantity is None:
        return
    names = [name, text(sensor, "Id")]
    limits = thresholds(sensor) if quantity in STATUS_TYPES else {}
    if quantity == Quantity.FAN_SPEED_RATIO:
        limits = {}  # in percent of a speed hwpoller has no limit metric for
    value = number(sensor, "Reading")
    context = text(sensor, "PhysicalContext")
    if not out.value(quantity, name, value, limits, names, context):
        return
    hw_type = STATUS_TYPES.get(quantity)
    if hw_type is not None:
        state = health(sensor)
        low = limits.get(LimitType.LOW_CRITICAL)
        if quantity == Quantity.FAN_SPEED and value is not None and low is not None and value < low:
            state = State.FAILED
        out.status(name, state, hw_type)


def _legacy_thermal(thermal: JsonObject, out: Out) -> None:
    """The deprecated Thermal resource: Temperatures and Fans arrays. An entry whose Name a
    Sensor of the same kind already gave is that sensor (services keep both)."""
    for name, member in named_members(thermal, "Temperatures", "Temperature", out):
        # CurrentReading: HPE iLO 4's pre-1.0 Thermal.
        value = first_number(member, ("ReadingCelsius", "CurrentReading"))
        context = text(member, "PhysicalContext")
        limits = legacy_thresholds(member)
        if out.value(Quantity.TEMPERATURE, name, value, limits, [name], context):
            out.status(name, health(member), HwType.TEMPERATURE)
    for name, member in named_members(thermal, "Fans", "Fan", out):
        if (Quantity.FAN_SPEED, name) in out.named or (Quantity.FAN_SPEED_RATIO, name) in out.named:
            continue
        state = health(member)
        units = next((u for k in FAN_UNITS if (u := text(member, k))), "")
        value = first_number(member, FAN_VALUES)
        rpm = number(member, "ReadingRPM")  # some services name the unit in the property
        if rpm is None and units in ("", "RPM"):
            rpm = value
        if rpm is not None:
            limits = legacy_thresholds(member)
            out.value(Quantity.FAN_SPEED, name, rpm, limits, [name], "")
            low = limits.get(LimitType.LOW_CRITICAL)
            if low is not None and rpm < low:
                state = State.FAILED
        if units in PERCENT_KINDS:
            out.value(Quantity.FAN_SPEED_RATIO, name, value, {}, [name], "")
        out.status(name, state, HwType.FAN)


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
