"""Turn decoded BMC sensors into normalised Readings. Pure: no I/O.

Which sensors count: temperature (sensor type 01h), fan (04h) and power supply (08h).
Temperatures get a location from the profile's rules, fans in RPM a speed, and every one a
hw_status from the BMC's own view of its health; thresholds become limit readings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from pyghmi.constants import Health

from poller.ipmi.profile import IpmiLocationRule, locate
from poller.ipmi.sdr import SdrSensor, SensorValue
from poller.model import HwType, LimitType, Quantity, Reading, State

SENSOR_TEMPERATURE, SENSOR_FAN, SENSOR_POWER_SUPPLY = 0x01, 0x04, 0x08
READING_THRESHOLD, READING_PRESENCE, READING_SPECIFIC = 0x01, 0x08, 0x6F
HW_TYPES = {
    SENSOR_TEMPERATURE: HwType.TEMPERATURE,
    SENSOR_FAN: HwType.FAN,
    SENSOR_POWER_SUPPLY: HwType.POWER_SUPPLY,
}
# Power supply (sensor-specific offsets, IPMI table 42-3): 0 presence detected; the others
# are failure, predictive failure, input lost, ... A supply with no bit set is absent.
PSU_PRESENT = 0x01


def sensor_names(sensors: Sequence[SdrSensor]) -> dict[tuple[int, int], str]:
    """Stable, unique label per sensor (by (lun, number)).

    Some BMCs give several sensors one name (Dell iDRAC calls both CPU sensors "Temp"); those
    get their entity id and instance appended, as ipmitool shows them ("Temp 3.1").
    """
    counts = Counter(s.name for s in sensors if s.sensor_type in HW_TYPES)
    names = {}
    for s in sensors:
        unique = counts[s.name] <= 1
        names[(s.lun, s.number)] = s.name if unique else f"{s.name} {s.entity}.{s.instance}"
    return names


def state_of(health: int) -> State:
    """pyghmi's health flags -> State: warning is degraded, critical or failed is failed."""
    if health & (Health.Failed | Health.Critical):
        return State.FAILED
    if health & Health.Warning:
        return State.DEGRADED
    return State.OK


def to_celsius(value: float, unit: str) -> float | None:
    """A temperature in the SDR's unit as Celsius; None for a unit that is not one."""
    if unit == "°C":
        return value
    if unit == "°F":
        return round((value - 32.0) * 5.0 / 9.0, 6)
    if unit == "K":
        return round(value - 273.15, 6)
    return None


def _present(sensor: SdrSensor, got: SensorValue) -> bool:
    """False for a discrete sensor that says its device is absent."""
    if sensor.reading_type == READING_PRESENCE:  # offset 0 absent, 1 present
        return bool(got.states & 0x02)
    if sensor.sensor_type == SENSOR_POWER_SUPPLY and sensor.reading_type == READING_SPECIFIC:
        return got.states != 0
    return True


def normalize_sensors(
    sensors: Sequence[SdrSensor],
    values: Mapping[tuple[int, int], SensorValue],
    thresholds: Mapping[tuple[int, int], Mapping[LimitType, float]],
    rules: Sequence[IpmiLocationRule],
) -> list[Reading]:
    """Readings for every sensor that has a value; absent/disabled/N/A ones are left out."""
    names = sensor_names(sensors)
    out: list[Reading] = []
    for sensor in sensors:
        hw_type = HW_TYPES.get(sensor.sensor_type)
        key = (sensor.lun, sensor.number)
        got = values.get(key)
        if hw_type is None or got is None or not _present(sensor, got):
            continue
        name = names[key]
        state = state_of(got.health)
        limits = dict(thresholds.get(key, {}))
        if sensor.sensor_type == SENSOR_TEMPERATURE and got.value is not None:
            celsius = to_celsius(got.value, sensor.unit)
            if celsius is None:
                continue
            location = locate(rules, sensor.name, sensor.entity)
            out.append(Reading(Quantity.TEMPERATURE, name, celsius, location=location))
            for limit_type, limit in sorted(limits.items()):
                limit_c = to_celsius(limit, sensor.unit)
                if limit_c is not None:
                    out.append(
                        Reading(
                            Quantity.TEMPERATURE,
                            name,
                            limit_c,
                            location=location,
                            limit_type=limit_type,
                        )
                    )
        elif sensor.sensor_type == SENSOR_FAN and got.value is not None and sensor.unit == "RPM":
            out.append(Reading(Quantity.FAN_SPEED, name, got.value))
            for limit_type, limit in sorted(limits.items()):
                out.append(Reading(Quantity.FAN_SPEED, name, limit, limit_type=limit_type))
            # A stopped fan below its lower critical threshold has failed, whether or not
            # the BMC raised the threshold event (some only do after a rearm).
            low = limits.get(LimitType.LOW_CRITICAL)
            if low is not None and got.value < low:
                state = State.FAILED
        out.append(Reading(Quantity.STATUS, name, state=state.value, hw_type=hw_type))
    return out
