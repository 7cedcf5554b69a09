"""The simulated SNMP devices: which objects each serves and how the room model fills them.

Each renderer returns {OID: pysnmp value} for one device, using the objects (and units,
enums, table layouts) of the real MIBs that the shipped profiles in mibs/ read:

- UPS: APC Smart-UPS with a network card (sysObjectID smartUPS2): PowerNet-MIB upsBasic/
  upsAdv/upsHighPrec, one integrated environmental probe (iem), and RFC 1628 UPS-MIB;
- environmental monitor: APC NetBotz 450 (NETBOTZV2-MIB) with temperature, humidity,
  dew point, a door switch, a leak rope under rack A and a spot leak sensor under rack B;
- CRAC: Vertiv/Liebert DS (LIEBERT-GP-ENVIRONMENTAL-MIB and LIEBERT-GP-CONDITIONS-MIB).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pysnmp.proto import rfc1902

from poller.simulator.model import RoomModel
from poller.simulator.snmp_agent import Oid, oid

Values = dict[Oid, Any]


def _i(value: float) -> Any:
    return rfc1902.Integer32(round(value))


def _g(value: float) -> Any:
    return rfc1902.Gauge32(max(0, round(value)))


def _t(seconds: float) -> Any:
    return rfc1902.TimeTicks(max(0, round(seconds * 100)) % (1 << 32))


def _s(text: str) -> Any:
    return rfc1902.OctetString(text)


def _o(text: str) -> Any:
    return rfc1902.ObjectIdentifier(text)


def _system(values: Values, descr: str, object_id: str, name: str, uptime: float) -> None:
    """MIB-2 system group."""
    base = "1.3.6.1.2.1.1"
    values[oid(f"{base}.1.0")] = _s(descr)
    values[oid(f"{base}.2.0")] = _o(object_id)
    values[oid(f"{base}.3.0")] = _t(uptime)
    values[oid(f"{base}.4.0")] = _s("facilities@example.net")
    values[oid(f"{base}.5.0")] = _s(name)
    values[oid(f"{base}.6.0")] = _s("Server room (simulated)")


def _table(values: Values, entry: str, rows: dict[int, dict[int, Any]]) -> None:
    """Put {index: {column: value}} into values under a table entry OID."""
    for index, columns in rows.items():
        for column, value in columns.items():
            values[oid(f"{entry}.{column}.{index}")] = value


# Cards boot long before the simulation starts: uptime begins at about 3 days.
UPTIME_BASE = 3 * 86400.0


def render_ups(room: RoomModel, name: str) -> Values:
    """APC Smart-UPS SRT 5000 (PowerNet-MIB + integrated probe + RFC 1628 UPS-MIB)."""
    ups = room.ups
    values: Values = {}
    _system(
        values,
        "APC Web/SNMP Management Card (MB:v4.2.1 PF:v7.0.6 AF1:v7.0.6 MN:AP9641 HR:05)",
        "1.3.6.1.4.1.318.1.3.27",
        name,
        UPTIME_BASE + room.now,
    )
    on_battery = not ups.mains
    low = ups.charge < 0.25
    in_volts = 0.0 if on_battery else 230.0 + room.noise(0.4)
    out_volts = 230.0 + room.noise(0.2)
    watts = ups.load * ups.rating_watts
    apc = "1.3.6.1.4.1.318.1.1.1"
    scalars: dict[str, Any] = {
        "1.1.1.0": _s("Smart-UPS SRT 5000"),  # upsBasicIdentModel
        "1.1.2.0": _s(name),  # upsBasicIdentName
        "1.2.1.0": _s("UPS 16.3 (ID1015)"),  # upsAdvIdentFirmwareRevision
        "1.2.3.0": _s("AS2210123456"),  # upsAdvIdentSerialNumber
        "2.1.1.0": _i(3 if low else 2),  # upsBasicBatteryStatus normal(2) low(3)
        "2.1.2.0": _t(ups.seconds_on_battery),  # upsBasicBatteryTimeOnBattery
        "2.2.1.0": _g(ups.charge * 100),  # upsAdvBatteryCapacity (%)
        "2.2.2.0": _g(ups.battery_temp),  # upsAdvBatteryTemperature (C)
        "2.2.3.0": _t(ups.runtime),  # upsAdvBatteryRunTimeRemaining
        "2.2.4.0": _i(1),  # upsAdvBatteryReplaceIndicator noBatteryNeedsReplacing(1)
        "2.2.8.0": _i(ups.battery_voltage),  # upsAdvBatteryActualVoltage (V)
        "2.3.1.0": _g(ups.charge * 1000),  # upsHighPrecBatteryCapacity (0.1 %)
        "2.3.2.0": _g(ups.battery_temp * 10),  # upsHighPrecBatteryTemperature (0.1 C)
        "2.3.4.0": _i(ups.battery_voltage * 10),  # upsHighPrecBatteryActualVoltage (0.1 V)
        "3.2.1.0": _g(in_volts),  # upsAdvInputLineVoltage
        "3.2.4.0": _g(0 if on_battery else 50),  # upsAdvInputFrequency
        "3.3.1.0": _g(in_volts * 10),  # upsHighPrecInputLineVoltage (0.1 V)
        "3.3.4.0": _g(0 if on_battery else 500),  # upsHighPrecInputFrequency (0.1 Hz)
        "4.1.1.0": _i(3 if on_battery else 2),  # upsBasicOutputStatus onLine(2) onBattery(3)
        "4.2.1.0": _g(out_volts),  # upsAdvOutputVoltage
        "4.2.2.0": _g(50),  # upsAdvOutputFrequency
        "4.2.3.0": _g(ups.load * 100),  # upsAdvOutputLoad (%)
        "4.2.4.0": _g(watts / 230.0),  # upsAdvOutputCurrent (A)
        "4.2.8.0": _i(watts),  # upsAdvOutputActivePower (W)
        "4.3.1.0": _g(out_volts * 10),  # upsHighPrecOutputVoltage (0.1 V)
        "4.3.3.0": _g(ups.load * 1000),  # upsHighPrecOutputLoad (0.1 %)
    }
    values.update({oid(f"{apc}.{k}"): v for k, v in scalars.items()})
    # Integrated environmental monitor: one temperature-only probe on top of rack B.
    probe = room.room + 3.0 + room.noise(0.05)
    iem = "1.3.6.1.4.1.318.1.1.10.2"
    _table(
        values,
        f"{iem}.2.2.1",  # iemConfigProbesEntry
        {1: {1: _i(1), 2: _s("Rack B Top"), 3: _i(32), 4: _i(10), 5: _i(1), 6: _i(80),
             7: _i(20), 12: _i(40), 13: _i(5), 14: _i(90), 15: _i(10)}},
    )  # fmt: skip
    _table(
        values,
        f"{iem}.3.2.1",  # iemStatusProbesEntry: connected(2), celsius(1), humidity 0: none
        {1: {1: _i(1), 2: _s("Rack B Top"), 3: _i(2), 4: _i(probe), 5: _i(1), 6: _i(0),
             7: _i(2 if probe >= 32 else 1), 8: _i(1), 9: _i(1), 10: _i(1)}},
    )  # fmt: skip
    # RFC 1628 UPS-MIB.
    std = "1.3.6.1.2.1.33.1"
    alarms = [("1.3.6.1.2.1.33.1.6.3.2", on_battery), ("1.3.6.1.2.1.33.1.6.3.3", low)]
    active = [descr for descr, on in alarms if on]
    std_scalars: dict[str, Any] = {
        "1.1.0": _s("APC"),  # upsIdentManufacturer
        "1.2.0": _s("Smart-UPS SRT 5000"),  # upsIdentModel
        "1.3.0": _s("UPS 16.3"),  # upsIdentUPSSoftwareVersion
        "1.4.0": _s("AOS 7.0.6"),  # upsIdentAgentSoftwareVersion
        "1.5.0": _s(name),  # upsIdentName
        "2.1.0": _i(3 if low else 2),  # upsBatteryStatus
        "2.2.0": _i(ups.seconds_on_battery),  # upsSecondsOnBattery
        "2.3.0": _i(ups.runtime / 60),  # upsEstimatedMinutesRemaining
        "2.4.0": _i(ups.charge * 100),  # upsEstimatedChargeRemaining
        "2.5.0": _i(ups.battery_voltage * 10),  # upsBatteryVoltage (0.1 V)
        "2.7.0": _i(ups.battery_temp),  # upsBatteryTemperature
        "3.2.0": _i(1),  # upsInputNumLines
        "4.1.0": _i(5 if on_battery else 3),  # upsOutputSource normal(3) battery(5)
        "4.2.0": _i(500),  # upsOutputFrequency (0.1 Hz)
        "4.3.0": _i(1),  # upsOutputNumLines
        "6.1.0": _g(len(active)),  # upsAlarmsPresent
    }
    values.update({oid(f"{std}.{k}"): v for k, v in std_scalars.items()})
    _table(
        values,
        f"{std}.3.3.1",  # upsInputEntry: index, frequency (0.1 Hz), voltage
        {1: {1: _i(1), 2: _i(0 if on_battery else 500), 3: _i(in_volts)}},
    )
    _table(
        values,
        f"{std}.4.4.1",  # upsOutputEntry: index, voltage, current (0.1 A), power, load %
        {1: {1: _i(1), 2: _i(out_volts), 3: _i(watts / 23.0), 4: _i(watts),
             5: _i(ups.load * 100)}},
    )  # fmt: skip
    _table(
        values,
        f"{std}.6.2.1",  # upsAlarmEntry: id, descr, time
        {i + 1: {1: _i(i + 1), 2: _o(descr), 3: _t(UPTIME_BASE)} for i, descr in enumerate(active)},
    )
    return values


def _dew_point(temp: float, humidity: float) -> float:
    """Magnus formula: the temperature at which this air would condense."""
    a, b = 17.62, 243.12
    gamma = math.log(max(humidity, 0.01)) + a * temp / (b + temp)
    return b * gamma / (a - gamma)


def _netbotz_row(sensor_id: str, value: int, status: int, label: str, port: str, text: str) -> Any:
    return {1: _s(sensor_id), 2: _i(value), 3: _i(status), 4: _s(label),
            5: _s("nbHawk_0001"), 6: _s(f"nbHawk_0001_{port}"), 7: _s(text)}  # fmt: skip


def render_envmon(room: RoomModel, name: str) -> Values:
    """APC NetBotz 450 in rack A (NETBOTZV2-MIB)."""
    values: Values = {}
    _system(
        values,
        "NetBotz 450 Appliance - BotzWare v4.7.2",
        "1.3.6.1.4.1.5528.100.20.10.2013",
        name,
        UPTIME_BASE + room.now,
    )
    nb = "1.3.6.1.4.1.5528.100"
    enclosure = "110.98.111.116.122"  # index: the enclosure id "nbotz" as an OID string
    for column, value in {1: _s("nbotz"), 2: _i(2), 3: _i(0), 4: _s("NetBotz 450")}.items():
        values[oid(f"{nb}.2.1.1.{column}.{enclosure}")] = value
    front = room.room + 0.6 + room.noise(0.05)
    rear = front + 16.0 + room.noise(0.1)
    humidity = room.humidity

    def temp_status(celsius: float) -> int:
        # NetBotz error status: normal(0) warning(2) critical(4)
        return 4 if celsius >= 35 else 2 if celsius >= 27 else 0

    rows = {
        1: _netbotz_row("nbHawk_TEMP1", round(front * 10), temp_status(front),
                        "Temperature (Rack A Front)", "A1", f"{front:.1f}"),
        2: _netbotz_row("nbHawk_TEMP2", round(rear * 10), 4 if rear >= 50 else 0,
                        "Temperature (Rack A Rear)", "A2", f"{rear:.1f}"),
    }  # fmt: skip
    _table(values, f"{nb}.4.1.1.1", rows)  # tempSensorEntry
    humid_status = 3 if humidity >= 0.70 else 2 if humidity >= 0.60 else 0
    _table(
        values,
        f"{nb}.4.1.2.1",  # humiSensorEntry
        {1: _netbotz_row("nbHawk_HUMI1", round(humidity * 1000), humid_status,
                         "Humidity (Rack A Front)", "A1", f"{humidity * 100:.1f}")},
    )  # fmt: skip
    dew = _dew_point(front, humidity)
    _table(
        values,
        f"{nb}.4.1.3.1",  # dewPointSensorEntry
        {1: _netbotz_row("nbHawk_DEWP1", round(dew * 10), 0, "Dew Point (Rack A Front)",
                         "A1", f"{dew:.1f}")},
    )  # fmt: skip
    _table(
        values,
        f"{nb}.4.2.2.1",  # doorSwitchSensorEntry: closed(1)
        {1: _netbotz_row("nbHawk_DOOR1", 1, 0, "Door (Server Room)", "D1", "Closed")},
    )
    wet = room.leak_rope_wet
    _table(
        values,
        f"{nb}.4.2.10.1",  # otherStateSensorEntry: leak rope and spot leak sensor
        {
            1: _netbotz_row("nbHawk_LEAK1", 1 if wet else 0, 4 if wet else 0,
                            "Leak Rope (Rack A Under Floor)", "D4",
                            "Leak" if wet else "No Leak"),
            2: _netbotz_row("nbHawk_LEAK2", 0, 0, "Spot Leak (Rack B Under Floor)", "D5",
                            "No Leak"),
        },
    )  # fmt: skip
    return values


LGP = "1.3.6.1.4.1.476.1.42"
# lgpConditionsWellKnown members the simulated unit raises, with lgpConditionType.
COND_COMPRESSOR = (f"{LGP}.3.2.1.7.1", 6)  # lgpConditionCompressor1HighHeadPressure, alarm
COND_HIGH_TEMP = (f"{LGP}.3.2.1.1", 4)  # lgpConditionHighTemperature, warning
COND_WATER = (f"{LGP}.3.2.1.14", 6)  # lgpConditionWaterUnderFloor, alarm
SUPPLY_HIGH, SUPPLY_LOW = 24, 10


def render_crac(room: RoomModel, name: str) -> Values:
    """Liebert DS CRAC with an IntelliSlot Unity card (LIEBERT-GP-ENV + CONDITIONS)."""
    crac = room.crac
    values: Values = {}
    _system(values, "Liebert DS IntelliSlot Unity", LGP, name, UPTIME_BASE + room.now)
    values[oid(f"{LGP}.2.1.1.0")] = _s("Liebert")  # lgpAgentIdentManufacturer
    values[oid(f"{LGP}.2.1.2.0")] = _s("Liebert DS")  # lgpAgentIdentModel
    values[oid(f"{LGP}.2.1.3.0")] = _s("7.4.1.0_00065")  # lgpAgentIdentFirmwareVersion
    running = crac.running(room.ups.mains)
    supply = round(crac.supply + room.noise(0.05))
    _table(
        values,
        f"{LGP}.3.4.1.3.3.1",  # lgpEnvTemperatureEntryDegC: id, descr, value, high, low
        {
            1: {1: _g(1), 2: _o(f"{LGP}.3.4.1.1.3"), 3: _i(supply), 4: _i(SUPPLY_HIGH),
                5: _i(SUPPLY_LOW)},
            2: {1: _g(2), 2: _o(f"{LGP}.3.4.1.1.2"), 3: _i(crac.return_air), 4: _i(32),
                5: _i(15)},
        },
    )  # fmt: skip
    _table(
        values,
        f"{LGP}.3.4.2.2.3.1",  # lgpEnvHumidityEntryRel: return air humidity
        {1: {1: _g(1), 2: _o(f"{LGP}.3.4.2.1.2"), 3: _i(crac.humidity * 100), 4: _i(65),
             5: _i(30)}},
    )  # fmt: skip
    conditions: dict[int, tuple[str, int]] = {}
    if not crac.compressor_ok:
        conditions[1001] = COND_COMPRESSOR
    if supply >= SUPPLY_HIGH:
        conditions[1002] = COND_HIGH_TEMP
    if crac.floor_wet:
        conditions[1003] = COND_WATER
    alarm = any(kind == 6 for _, kind in conditions.values())
    values[oid(f"{LGP}.3.4.3.1.0")] = _i(1 if running else 2)  # lgpEnvStateSystem on/off
    values[oid(f"{LGP}.3.4.3.2.0")] = _i(1 if crac.cooling(room.ups.mains) else 2)  # Cooling
    values[oid(f"{LGP}.3.4.3.8.0")] = _i(1 if alarm else 2)  # GeneralAlarmOutput on/off
    values[oid(f"{LGP}.3.2.2.0")] = _g(len(conditions))  # lgpConditionsPresent
    _table(
        values,
        f"{LGP}.3.2.3.1",  # lgpConditionEntry: id, descr, time, type, current state active(1)
        {
            index: {1: _g(index), 2: _o(descr), 3: _t(UPTIME_BASE), 10: _i(kind), 12: _i(1)}
            for index, (descr, kind) in conditions.items()
        },
    )
    return values


RENDERERS: dict[str, Callable[[RoomModel, str], Values]] = {
    "ups": render_ups,
    "envmon": render_envmon,
    "crac": render_crac,
}
