"""A simulated server BMC: SDR repository and sensor commands over the RMCP+ server.

Each server gets the sensors a real one of its make shows (names, entity ids, thresholds):
inlet (entity 37h air inlet), exhaust and CPU temperatures, fans in RPM with lower
thresholds, and two power supplies as discrete sensors (type 08h, presence/failure).
Readings come from the room model at the moment of the request and carry the threshold
comparison bits a real BMC sets, so clients judge health exactly as with real hardware.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass

from poller.simulator.model import RoomModel, Server
from poller.simulator.rmcp import RmcpServer

NETFN_APP, NETFN_SENSOR, NETFN_STORAGE = 0x06, 0x04, 0x0A
CC_INVALID_COMMAND, CC_NOT_PRESENT, CC_OUT_OF_RANGE = 0xC1, 0xCB, 0xC9
UNIT_CELSIUS, UNIT_RPM = 1, 18
TEMPERATURE, FAN, POWER_SUPPLY = 0x01, 0x04, 0x08
THRESHOLD, SENSOR_SPECIFIC = 0x01, 0x6F
ENTITY_PROCESSOR, ENTITY_SYSTEM_BOARD, ENTITY_PSU, ENTITY_FAN, ENTITY_AIR_INLET = (
    0x03,
    0x07,
    0x0A,
    0x1D,
    0x37,
)
# Threshold order in Get Sensor Thresholds and in SDR bytes 37-42 (reversed there).
LIMITS = ("lnc", "lc", "lnr", "unc", "uc", "unr")
# The SDR was "last changed" at this (fixed) time: clients cache it by these timestamps.
SDR_TIMESTAMP = 1_700_000_000

VENDORS = {
    # make: (IANA manufacturer id, product id, firmware major, minor (BCD))
    "dell": (674, 0x0100, 7, 0x10),
    "supermicro": (10876, 0x1B21, 1, 0x73),
}


@dataclass(frozen=True)
class SensorDef:
    """One SDR full sensor record and how to read it from the model."""

    number: int
    name: str
    sensor_type: int
    entity: int
    instance: int
    read: Callable[[Server], float]  # value in the unit, or state bits for discrete
    unit: int = UNIT_CELSIUS
    m: int = 1
    limits: tuple[tuple[str, float], ...] = ()

    @property
    def discrete(self) -> bool:
        """Power supplies report states, not a number."""
        return self.sensor_type == POWER_SUPPLY

    def raw(self, value: float) -> int:
        """The reading byte for a value (signed byte for temperatures)."""
        raw = round(value / self.m)
        if self.unit == UNIT_CELSIUS:
            return max(-128, min(127, raw)) & 0xFF
        return max(0, min(255, raw))

    def decoded(self, raw: int) -> float:
        """What a client makes of a reading byte."""
        signed = raw - 256 if self.unit == UNIT_CELSIUS and raw > 127 else raw
        return float(signed * self.m)


def _temps(s: Server) -> list[float]:
    return s.cpus


def sensors_for(server: Server) -> tuple[SensorDef, ...]:
    """The sensor set of a server of this make."""
    temp_limits = (("lc", -7), ("lnc", 3), ("unc", 42), ("uc", 47))
    exhaust_limits = (("lc", 3), ("lnc", 8), ("unc", 70), ("uc", 75))
    cpu_limits = (("lc", 3), ("lnc", 8), ("unc", 88), ("uc", 93))

    def psu_bits(i: int) -> Callable[[Server], float]:
        # Presence detected; presence and failure detected.
        return lambda s: 0x01 if s.psu_ok[i] else 0x03

    def fan_rpm(i: int) -> Callable[[Server], float]:
        return lambda s: s.fans[i]

    fan_limits: tuple[tuple[str, float], ...]
    if server.vendor == "dell":
        # iDRAC names: both CPU sensors are "Temp" (told apart by entity instance).
        fan_limits = (("lc", 600), ("lnc", 840))
        defs = [
            SensorDef(0x04, "Inlet Temp", TEMPERATURE, ENTITY_AIR_INLET, 1,
                      lambda s: s.inlet, limits=temp_limits),
            SensorDef(0x01, "Exhaust Temp", TEMPERATURE, ENTITY_SYSTEM_BOARD, 1,
                      lambda s: s.exhaust, limits=exhaust_limits),
            SensorDef(0x0E, "Temp", TEMPERATURE, ENTITY_PROCESSOR, 1,
                      lambda s: _temps(s)[0], limits=cpu_limits),
            SensorDef(0x0F, "Temp", TEMPERATURE, ENTITY_PROCESSOR, 2,
                      lambda s: _temps(s)[1], limits=cpu_limits),
        ]  # fmt: skip
        fan_name = "Fan{}"
    else:
        fan_limits = (("lnr", 300), ("lc", 500), ("lnc", 700))
        defs = [
            SensorDef(0x01, "CPU1 Temp", TEMPERATURE, ENTITY_PROCESSOR, 1,
                      lambda s: _temps(s)[0], limits=cpu_limits),
            SensorDef(0x02, "CPU2 Temp", TEMPERATURE, ENTITY_PROCESSOR, 2,
                      lambda s: _temps(s)[1], limits=cpu_limits),
            SensorDef(0x0B, "Inlet Temp", TEMPERATURE, ENTITY_AIR_INLET, 1,
                      lambda s: s.inlet, limits=temp_limits),
            SensorDef(0x0C, "Outlet Temp", TEMPERATURE, ENTITY_SYSTEM_BOARD, 1,
                      lambda s: s.exhaust, limits=exhaust_limits),
        ]  # fmt: skip
        fan_name = "FAN{}"
    for i in range(server.fan_count):
        defs.append(
            SensorDef(0x30 + i, fan_name.format(i + 1), FAN, ENTITY_FAN, i + 1,
                      fan_rpm(i), unit=UNIT_RPM, m=60, limits=fan_limits)
        )  # fmt: skip
    for i in range(len(server.psu_ok)):
        defs.append(
            SensorDef(0x60 + i, f"PS{i + 1} Status", POWER_SUPPLY, ENTITY_PSU, i + 1,
                      psu_bits(i), unit=0)
        )  # fmt: skip
    return tuple(defs)


def sdr_record(record_id: int, sensor: SensorDef) -> bytes:
    """A full sensor record (SDR type 01h) as IPMI v2.0 table 43-1 lays it out."""
    limits = dict(sensor.limits)
    readable = sum(1 << LIMITS.index(k) for k in limits)
    name = sensor.name.encode()[:16]
    signed = sensor.unit == UNIT_CELSIUS
    body = bytes(
        [
            0x20, 0x00, sensor.number,  # owner: the BMC, LUN 0
            sensor.entity, sensor.instance,
            0x7F,  # initialisation: scanning, events, thresholds, type
            0x44 if limits else 0x40,  # auto re-arm; thresholds readable
            sensor.sensor_type,
            SENSOR_SPECIFIC if sensor.discrete else THRESHOLD,
        ]
    )  # fmt: skip
    # Assertion/deassertion masks: comparison status returned for each readable limit;
    # for a power supply, the presence and failure offsets.
    lower, upper = readable & 0x07, (readable >> 3) & 0x07
    if sensor.discrete:
        body += struct.pack("<HHH", 0x0003, 0x0003, 0x0003)
    else:
        body += struct.pack("<HHBB", lower << 12, upper << 12, readable, 0)
    body += bytes(
        [
            0x80 if signed else 0x00,  # analog data format: 2's complement temperatures
            sensor.unit, 0, 0,  # base unit, modifier unit, linear
            sensor.m & 0xFF, (sensor.m >> 8 & 0x03) << 6,  # M (10 bits), tolerance 0
            0, 0, 0, 0,  # B, accuracy, direction, exponents
            0, 0, 0, 0,  # analog flags, nominal, normal max, normal min
            0x7F if signed else 0xFF, 0x80 if signed else 0x00,  # sensor max, min
        ]
    )  # fmt: skip
    for key in ("unr", "uc", "unc", "lnr", "lc", "lnc"):
        body += bytes([sensor.raw(limits[key]) if key in limits else 0])
    body += bytes([0, 0, 0, 0, 0])  # hysteresis +/-, reserved, OEM
    body += bytes([0xC0 | len(name)]) + name  # 8-bit ASCII id string
    return struct.pack("<HBBB", record_id, 0x51, 0x01, len(body)) + body


class Bmc:
    """IPMI command handling for one server's BMC."""

    def __init__(self, room: RoomModel, server: Server) -> None:
        self.room = room
        self.server = server
        self.sensors = sensors_for(server)
        self._by_number = {s.number: s for s in self.sensors}
        self._records = [sdr_record(i + 1, s) for i, s in enumerate(self.sensors)]
        self._reservation = 0
        self.guid = hashlib.md5(server.name.encode(), usedforsecurity=False).digest()

    def handle(self, netfn: int, cmd: int, data: bytes, lun: int) -> tuple[int, bytes]:
        """Answer one command: (completion code, data)."""
        if lun != 0:
            return CC_NOT_PRESENT, b""
        if netfn == NETFN_APP and cmd == 0x01:
            return 0, self._device_id()
        if netfn == NETFN_STORAGE and cmd == 0x20:  # Get SDR Repository Info
            info = struct.pack("<BHHII", 0x51, len(self._records), 0x0800, SDR_TIMESTAMP, 0)
            return 0, info + b"\x02"  # Reserve SDR Repository supported
        if netfn == NETFN_STORAGE and cmd == 0x22:  # Reserve SDR Repository
            self._reservation = self._reservation % 0xFFFF + 1
            return 0, struct.pack("<H", self._reservation)
        if netfn == NETFN_STORAGE and cmd == 0x23 and len(data) >= 6:
            return self._get_sdr(data)
        if netfn == NETFN_SENSOR and cmd == 0x2D and data:  # Get Sensor Reading
            return self._reading(data[0])
        if netfn == NETFN_SENSOR and cmd == 0x27 and data:  # Get Sensor Thresholds
            return self._thresholds(data[0])
        return CC_INVALID_COMMAND, b""

    def _device_id(self) -> bytes:
        manufacturer, product, major, minor = VENDORS[self.server.vendor]
        return (
            bytes([0x20, 0x01, major, minor, 0x02, 0x03])  # IPMI 2.0; sensor + SDR repository
            + struct.pack("<I", manufacturer)[:3]
            + struct.pack("<H", product)
            + bytes(4)
        )

    def _get_sdr(self, data: bytes) -> tuple[int, bytes]:
        record_id, offset, count = struct.unpack_from("<H", data, 2)[0], data[4], data[5]
        if record_id == 0xFFFF:
            record_id = len(self._records)
        index = (record_id or 1) - 1
        if index >= len(self._records):
            return CC_NOT_PRESENT, b""
        record = self._records[index]
        if offset > len(record):
            return CC_OUT_OF_RANGE, b""
        next_id = index + 2 if index + 1 < len(self._records) else 0xFFFF
        chunk = record[offset:] if count == 0xFF else record[offset : offset + count]
        return 0, struct.pack("<H", next_id) + chunk

    def _reading(self, number: int) -> tuple[int, bytes]:
        sensor = self._by_number.get(number)
        if sensor is None:
            return CC_NOT_PRESENT, b""
        value = sensor.read(self.server)
        if sensor.discrete:
            return 0, bytes([0, 0xC0, int(value) & 0xFF, 0x80])
        raw = sensor.raw(value)
        seen = sensor.decoded(raw)
        status = 0
        for bit, key in enumerate(LIMITS):
            limit = dict(sensor.limits).get(key)
            if limit is None:
                continue
            crossed = seen <= limit if key.startswith("l") else seen >= limit
            status |= crossed << bit
        return 0, bytes([raw, 0xC0, status, 0x80])  # events and scanning enabled

    def _thresholds(self, number: int) -> tuple[int, bytes]:
        sensor = self._by_number.get(number)
        if sensor is None:
            return CC_NOT_PRESENT, b""
        limits = dict(sensor.limits)
        readable = sum(1 << i for i, key in enumerate(LIMITS) if key in limits)
        return 0, bytes([readable]) + bytes(
            sensor.raw(limits[key]) if key in limits else 0 for key in LIMITS
        )


# Simulated BMC accounts: name -> (password, highest privilege: 2 user, 4 administrator).
USERS = {"monitor": ("sim-monitor-pw", 2), "admin": ("sim-admin-pw", 4)}


async def start_bmc(
    room: RoomModel, server: Server, sock: object
) -> tuple[Bmc, asyncio.DatagramTransport]:
    """Serve one BMC on an already bound UDP socket."""
    bmc = Bmc(room, server)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: RmcpServer(USERS, bmc.guid, bmc.handle),
        sock=sock,  # type: ignore[arg-type]
    )
    return bmc, transport
