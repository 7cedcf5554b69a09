"""Power supplies and power readings of a chassis: PowerSubsystem (PowerSupplies, each
with its PowerSupplyMetrics) or the deprecated Power resource (PowerSupplies[],
PowerControl[], Voltages[]).

Each power supply gives its health (hw_status{hw_type="power_supply", sensor=NAME}), the
state of its line input (sensor="NAME input"), its input voltage (hw_voltage_volts
{sensor="NAME input"}) and its input and output watts (hw_power_watts{sensor="NAME input"
/ "NAME output"}). An input that reads 0 V or LossOfInput beside a supply that still has
input is a lost A or B feed: the server keeps running on one feed, with no redundancy
left, and the PowerFeedLost alert says so before the second feed goes too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from poller.model import HwType, Quantity, State
from poller.redfish.access import (
    JsonObject,
    Out,
    child,
    first_number,
    health,
    last_segment,
    named_members,
    number,
    part_key,
    present,
    resource_name,
    text,
    unique_names,
)

# PowerSupply.LineInputStatus (PowerSubsystem, and Power 1.x where services send it).
LINE_STATUS = {"Normal": State.OK, "OutOfRange": State.DEGRADED, "LossOfInput": State.FAILED}
# PowerSupplyMetrics excerpts (each a SensorExcerpt: Reading, DataSourceUri) -> readings.
SUPPLY_METRICS = (
    ("InputVoltage", Quantity.VOLTAGE, "input"),
    ("InputPowerWatts", Quantity.POWER, "input"),
    ("OutputPowerWatts", Quantity.POWER, "output"),
)
# The same values in the deprecated Power.PowerSupplies[] members, newest name first
# (PowerInputWatts and PowerOutputWatts came with Power 1.5; LastPowerOutputWatts is the
# 1.0 name of the output).
LEGACY_SUPPLY = (
    (("LineInputVoltage",), Quantity.VOLTAGE, "input"),
    (("PowerInputWatts",), Quantity.POWER, "input"),
    (("PowerOutputWatts", "LastPowerOutputWatts"), Quantity.POWER, "output"),
)


def _supply(name: str, supply: JsonObject, out: Out) -> None:
    out.status(name, health(supply), HwType.POWER_SUPPLY)
    line = LINE_STATUS.get(text(supply, "LineInputStatus"))
    out.status(f"{name} input", line, HwType.POWER_SUPPLY)


def supplies(
    members: Sequence[JsonObject],
    metrics: Mapping[str, JsonObject],
    sensors: Mapping[str, JsonObject],
    used: set[str],
    out: Out,
) -> None:
    """PowerSubsystem's power supplies; `metrics` holds each one's PowerSupplyMetrics by
    the supply's @odata.id. A metric's Sensor (DataSourceUri) is not read a second time."""
    names = unique_names(
        [resource_name(m, last_segment(text(m, "@odata.id"))) for m in members],
        [part_key(m) for m in members],
    )
    for name, supply in zip(names, members, strict=True):
        if not present(supply):
            continue
        _supply(name, supply, out)
        found = metrics.get(text(supply, "@odata.id"))
        if found is None or not present(found):
            continue
        for key, quantity, side in SUPPLY_METRICS:
            excerpt = child(found, key)
            value = number(excerpt, "Reading")
            source = text(excerpt, "DataSourceUri")
            if source:
                used.add(source)
                if value is None:  # an excerpt may leave the value to its Sensor
                    value = number(sensors.get(source), "Reading")
            out.value(quantity, f"{name} {side}", value, {}, (), "")


def legacy_power(power: JsonObject, out: Out) -> None:
    """The deprecated Power resource: PowerSupplies, PowerControl and Voltages arrays."""
    for name, member in named_members(power, "PowerSupplies", "Power Supply", out):
        _supply(name, member, out)
        for keys, quantity, side in LEGACY_SUPPLY:
            out.value(quantity, f"{name} {side}", first_number(member, keys), {}, (), "")
    for name, member in named_members(power, "PowerControl", "Power Control", out):
        out.value(Quantity.POWER, name, number(member, "PowerConsumedWatts"), {}, [name], "")
    for name, member in named_members(power, "Voltages", "Voltage", out):
        out.value(Quantity.VOLTAGE, name, number(member, "ReadingVolts"), {}, [name], "")
