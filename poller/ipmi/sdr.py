"""The BMC's sensor data repository (SDR) and sensor reads. Blocking: runs in IPMI threads.

The SDR says, once, what every sensor is (name, entity, unit, conversion formula). Reading
it costs one command per record chunk, so it is read once per BMC and kept in a
process-wide cache, and re-read only when the repository's addition/erase timestamps (Get
SDR Repository Info, one command per poll) change. pyghmi's own SDR cache is keyed by model
and firmware only, not by BMC, so two servers of one model with different hardware could
share an SDR there; hwpoller keys its cache by address as well and uses pyghmi only to
decode records and readings.

Parsed sensors are shared between BMCs whose records are byte for byte the same (servers of
one model and firmware mostly are): pyghmi's decoder objects are large (~1 KiB each), and
1,000 BMCs would otherwise hold 1,000 copies of the same few dozen.
"""

from __future__ import annotations

import re
import struct
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyghmi.ipmi.private.constants as pyghmi_constants
from pyghmi.ipmi import sdr as pyghmi_sdr

from poller.errors import ProtocolError
from poller.ipmi.session import Response
from poller.model import LimitType

Raw = Callable[[int, int, bytes, int], Response]

NETFN_APP, NETFN_SENSOR, NETFN_STORAGE = 0x06, 0x04, 0x0A
GET_DEVICE_ID = 0x01
GET_SDR_REPOSITORY_INFO, RESERVE_SDR_REPOSITORY, GET_SDR = 0x20, 0x22, 0x23
GET_SENSOR_THRESHOLDS, GET_SENSOR_READING = 0x27, 0x2D
# Completion codes meaning "this sensor has nothing to read right now": not present,
# invalid field (sensor number unknown), not supported in present state, command illegal.
NO_READING_CODES = frozenset({0xCB, 0xCC, 0xCD, 0xD5})
CC_RESERVATION_CANCELLED, CC_CANNOT_RETURN_BYTES = 0xC5, 0xCA
# Sensors owned by the BMC itself; others (e.g. the ME at 0x2C) need bridging.
BMC_OWNER = 0x20
MAX_RECORDS = 2000
CHUNK = 16
# Get Sensor Thresholds: reply byte -> limit type. Non-recoverable levels are not exported.
THRESHOLD_BYTES = {
    2: LimitType.LOW_CRITICAL,
    1: LimitType.LOW_DEGRADED,
    4: LimitType.HIGH_DEGRADED,
    5: LimitType.HIGH_CRITICAL,
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class DeviceId:
    """What Get Device ID says about the BMC."""

    manufacturer_id: int
    product_id: int
    firmware: str


@dataclass(frozen=True, slots=True, weakref_slot=True)
class SdrSensor:
    """One readable sensor from the SDR, with pyghmi's decoder for its readings."""

    name: str
    number: int
    lun: int
    entity: int
    instance: int
    sensor_type: int
    reading_type: int
    unit: str
    thresholds: bool
    entry: Any  # pyghmi.ipmi.sdr.SDREntry


@dataclass(frozen=True, slots=True)
class SensorValue:
    """A decoded sensor reading; `value` is None for discrete sensors."""

    value: float | None
    health: int  # pyghmi.constants.Health bit flags
    states: int  # raw event state bits (offsets 0-14)


class _Adapter:
    """What pyghmi's SDR decoder expects of a Command: raw_command returning a dict."""

    def __init__(self, raw: Raw) -> None:
        self._raw = raw

    def raw_command(self, netfn: int, command: int, data: Sequence[int] = (), **_: Any) -> Any:
        rsp = self._raw(netfn, command, bytes(data), 0)
        return {"code": rsp.code, "data": bytearray(rsp.data)}


def _ok(rsp: Response, what: str) -> bytes:
    if rsp.code != 0:
        raise ProtocolError(f"{what} failed with completion code 0x{rsp.code:02x}")
    return rsp.data


def device_id(raw: Raw) -> DeviceId:
    """Get Device ID: manufacturer (IANA number), product and firmware revision."""
    data = _ok(raw(NETFN_APP, GET_DEVICE_ID, b"", 0), "Get Device ID")
    if len(data) < 11:
        raise ProtocolError("Get Device ID reply is too short")
    manufacturer = data[6] | data[7] << 8 | (data[8] & 0x0F) << 16
    product = data[9] | data[10] << 8
    return DeviceId(manufacturer, product, f"{data[2] & 0x7F}.{data[3]:02x}")


def repository_signature(raw: Raw) -> tuple[int, int, int]:
    """(record count, last addition, last erase) from Get SDR Repository Info."""
    data = _ok(raw(NETFN_STORAGE, GET_SDR_REPOSITORY_INFO, b"", 0), "Get SDR Repository Info")
    if len(data) < 13:
        raise ProtocolError("Get SDR Repository Info reply is too short")
    count, _free, added, erased = struct.unpack_from("<HHII", data, 1)
    return count, added, erased


def _reserve(raw: Raw) -> int:
    data = _ok(raw(NETFN_STORAGE, RESERVE_SDR_REPOSITORY, b"", 0), "Reserve SDR Repository")
    return int(data[0] | data[1] << 8) if len(data) >= 2 else 0


def _read_record(raw: Raw, record_id: int, reservation: int) -> tuple[int, bytes] | None:
    """(next record id, record bytes); None when the reservation was cancelled."""
    rid = struct.pack("<HH", reservation, record_id)
    rsp = raw(NETFN_STORAGE, GET_SDR, rid + bytes([0, 0xFF]), 0)
    if rsp.code == 0 and len(rsp.data) >= 7:
        return rsp.data[0] | rsp.data[1] << 8, rsp.data[2:]
    if rsp.code == CC_RESERVATION_CANCELLED:
        return None
    if rsp.code != CC_CANNOT_RETURN_BYTES:
        _ok(rsp, f"Get SDR record {record_id}")
    # The BMC cannot send a whole record at once: the 5-byte header, then chunks.
    head = raw(NETFN_STORAGE, GET_SDR, rid + bytes([0, 5]), 0)
    if head.code == CC_RESERVATION_CANCELLED:
        return None
    data = _ok(head, f"Get SDR record {record_id}")
    next_id, record = data[0] | data[1] << 8, bytearray(data[2:])
    total = 5 + record[4] if len(record) >= 5 else 5
    while len(record) < total:
        size = min(CHUNK, total - len(record))
        part = raw(NETFN_STORAGE, GET_SDR, rid + bytes([len(record), size]), 0)
        if part.code == CC_RESERVATION_CANCELLED:
            return None
        record += _ok(part, f"Get SDR record {record_id}")[2:]
    return next_id, bytes(record)


def read_records(raw: Raw) -> list[bytes]:
    """Every record of the SDR repository, following the record-id chain."""
    records: list[bytes] = []
    reservation, record_id, retries = _reserve(raw), 0, 0
    while record_id != 0xFFFF:
        got = _read_record(raw, record_id, reservation)
        if got is None:  # someone changed the repository under us: reserve and go on
            retries += 1
            if retries > 5:
                raise ProtocolError("SDR reservation kept being cancelled")
            reservation = _reserve(raw)
            continue
        next_id, record = got
        records.append(record)
        if next_id == record_id or len(records) > MAX_RECORDS:
            raise ProtocolError("the BMC's SDR record chain loops")
        record_id = next_id
    return records


def _clean_name(name: str, number: int) -> str:
    text = _CONTROL.sub("", name).strip()
    return text[:64] or f"sensor {number}"


# Parsed sensors by (record bytes, manufacturer id, product id): what pyghmi's decoder is
# built from. Weak: a sensor is dropped once no BMC's SDR holds it.
_SHARED: weakref.WeakValueDictionary[tuple[bytes, int, int], SdrSensor] = (
    weakref.WeakValueDictionary()
)
_SHARED_LOCK = threading.Lock()
# pyghmi's linearization codes above this are non-linear sensors whose formula factors are
# fetched from the BMC at read time and stored on the decoder: never shared.
_MAX_LINEAR = 11


def parse_records(records: Sequence[bytes], ident: DeviceId) -> tuple[SdrSensor, ...]:
    """Readable sensors owned by the BMC, from full (type 1) and compact (type 2) records."""
    sensors: list[SdrSensor] = []
    for record in records:
        if len(record) < 20 or record[3] not in (0x01, 0x02) or record[5] != BMC_OWNER:
            continue
        key = (bytes(record), ident.manufacturer_id, ident.product_id)
        with _SHARED_LOCK:
            shared = _SHARED.get(key)
        if shared is not None:
            sensors.append(shared)
            continue
        try:
            entry = pyghmi_sdr.SDREntry(
                bytearray(record), pyghmi_constants, False, ident.manufacturer_id, ident.product_id
            )
        except (NotImplementedError, IndexError, KeyError, ValueError, UnicodeDecodeError):
            continue  # a malformed record costs only its own sensor
        sensor = SdrSensor(
            name=_clean_name(str(entry.sensor_name), entry.sensor_number),
            number=entry.sensor_number,
            lun=entry.sensor_lun,
            entity=record[8],
            instance=record[9] & 0x7F,
            sensor_type=entry.sensor_type_number,
            reading_type=entry.reading_type,
            unit=str(entry.unit_suffix).strip(),
            thresholds=bool(entry.has_thresholds),
            entry=entry,
        )
        linearization = getattr(entry, "linearization", None)  # None: compact record
        if linearization is None or linearization <= _MAX_LINEAR:
            with _SHARED_LOCK:
                sensor = _SHARED.setdefault(key, sensor)
        sensors.append(sensor)
    return tuple(sensors)


_CACHE: dict[tuple[str, int], tuple[tuple[Any, ...], tuple[SdrSensor, ...]]] = {}
_CACHE_LOCK = threading.Lock()


def load_sensors(
    raw: Raw, host: str, port: int, ident: DeviceId, signature: tuple[int, int, int]
) -> tuple[SdrSensor, ...]:
    """The BMC's sensors from the process-wide cache, reading the SDR when it changed."""
    key = (ident.manufacturer_id, ident.product_id, ident.firmware, *signature)
    with _CACHE_LOCK:
        cached = _CACHE.get((host, port))
    if cached is not None and cached[0] == key:
        return cached[1]
    sensors = parse_records(read_records(raw), ident)
    with _CACHE_LOCK:
        _CACHE[(host, port)] = (key, sensors)
    return sensors


def forget(host: str, port: int) -> None:
    """Drop a BMC's cached SDR (when its target is removed)."""
    with _CACHE_LOCK:
        _CACHE.pop((host, port), None)


def _raw_number(sensor: SdrSensor, raw_value: int) -> int:
    fmt = sensor.entry.numeric_format
    if fmt == 2:
        return int(pyghmi_sdr.twos_complement(raw_value, 8))
    if fmt == 1:
        return int(pyghmi_sdr.ones_complement(raw_value, 8))
    return raw_value


def read_sensor(raw: Raw, sensor: SdrSensor) -> SensorValue | None:
    """Get Sensor Reading, decoded; None when the sensor is absent, disabled or N/A."""
    rsp = raw(NETFN_SENSOR, GET_SENSOR_READING, bytes([sensor.number]), sensor.lun)
    if rsp.code in NO_READING_CODES:
        return None
    data = _ok(rsp, f"Get Sensor Reading {sensor.name!r}")
    if len(data) < 2:
        return None
    padded = bytearray(data) + bytearray(max(0, 3 - len(data)))
    decoded = sensor.entry.decode_sensor_reading(_Adapter(raw), padded)
    if decoded.unavailable:
        return None
    states = padded[2] | (padded[3] & 0x7F) << 8 if len(padded) > 3 else padded[2]
    value = None if decoded.value is None else round(float(decoded.value), 6)
    return SensorValue(value=value, health=int(decoded.health), states=states)


def read_thresholds(raw: Raw, sensor: SdrSensor) -> dict[LimitType, float]:
    """The sensor's readable thresholds in its unit; {} when it has none."""
    if not sensor.thresholds:
        return {}
    rsp = raw(NETFN_SENSOR, GET_SENSOR_THRESHOLDS, bytes([sensor.number]), sensor.lun)
    if rsp.code != 0 or len(rsp.data) < 7:
        return {}
    readable, out = rsp.data[0], {}
    for index, limit in THRESHOLD_BYTES.items():
        if readable & (1 << (index - 1)):
            number = _raw_number(sensor, rsp.data[index])
            out[limit] = round(float(sensor.entry.decode_value(_Adapter(raw), number)), 6)
    return out
