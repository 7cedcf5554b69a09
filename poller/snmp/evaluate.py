"""Turn values fetched from a device into normalised Readings, as a profile says. Pure."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from poller.model import (
    LOCATED,
    DeviceData,
    DeviceInfo,
    Location,
    Quantity,
    Reading,
)
from poller.snmp.profile import Condition, MetricSpec, Profile, RawValue, Ref

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A decimal number as devices print one ("23.5", "-4", "1e3"); Python's float() also takes
# "1_000", "inf" and "nan", which no device means.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_MAX_NAME = 128
# Quantities whose readings are states, not numbers.
_STATES = frozenset({Quantity.STATUS, Quantity.UPS_POWER_SOURCE})


@dataclass
class Fetched:
    """Raw values of one poll: scalars by OID, table columns by column OID then row index."""

    scalars: dict[str, RawValue] = field(default_factory=dict)
    columns: dict[str, dict[str, RawValue]] = field(default_factory=dict)
    # Column OIDs whose walk failed, with why; metrics needing them are skipped.
    failed: dict[str, str] = field(default_factory=dict)


def text(raw: RawValue) -> str:
    """Render a raw value as text the way a profile's map keys and names are written."""
    if raw is None:
        return ""
    kind = type(raw)
    if kind is int:  # the commonest value: an enum or a gauge (no text to clean)
        return str(raw)
    if kind is bytes:
        shown = raw.decode("utf-8", errors="replace")  # type: ignore[union-attr]
    elif isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    else:
        shown = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    # Control characters are rare: str.isprintable() (C, no regex) finds the clean majority.
    return (shown if shown.isprintable() else _CONTROL.sub("", shown)).strip()


def number(raw: RawValue) -> float | None:
    """Read a raw value as a finite number; None when it is not one."""
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        value = float(raw)
    else:
        shown = text(raw)
        if len(shown) > 64 or not _NUMBER.fullmatch(shown):
            return None
        value = float(shown)
    return value if math.isfinite(value) else None


def to_celsius(value: float, unit: str) -> float | None:
    """Convert a temperature to Celsius; None for an unknown unit name."""
    unit = unit.lower()
    if unit in ("celsius", "c"):
        return value
    if unit in ("fahrenheit", "f"):
        return (value - 32.0) * 5.0 / 9.0
    if unit in ("kelvin", "k"):
        return value - 273.15
    return None


class _Row:
    """Lookup context for one table row (or the scalars, for scalar metrics)."""

    __slots__ = ("fetched", "index", "table")

    def __init__(self, fetched: Fetched, table: str | None, index: str) -> None:
        self.fetched = fetched
        self.table = table
        self.index = index

    def raw(self, column: int | None, oid: str | None, table: str | None = None) -> RawValue:
        if column is not None:
            column_oid = f"{table or self.table}.{column}"
            return self.fetched.columns.get(column_oid, {}).get(self.index)
        if oid is not None:
            return self.fetched.scalars.get(oid)
        return None

    def resolve(self, ref: Ref) -> RawValue:
        raw: RawValue = (
            ref.value if ref.value is not None else self.raw(ref.column, ref.oid, ref.table)
        )
        if ref.invalid and text(raw) in ref.invalid:
            raw = None
        if ref.map is not None:
            raw = ref.map.get(text(raw), ref.default)
        elif raw is None or (type(raw) is not int and text(raw) == ""):
            raw = ref.default
        if ref.format is not None and raw is not None:
            return ref.format.replace("{value}", text(raw))
        return raw


def _keep(row: _Row, conditions: Iterable[Condition]) -> bool:
    for cond in conditions:
        value = row.index if cond.index else text(row.raw(cond.column, cond.oid, cond.table))
        if not cond.test(value):
            return False
    return True


def _factor(row: _Row, metric: MetricSpec) -> float | None:
    """The product of a metric's per-row multipliers over its divisors; None if unknown."""
    factor = 1.0
    for refs, divide in ((metric.multiply_by, False), (metric.divide_by, True)):
        for ref in refs:
            value = number(row.resolve(ref))
            if value is None or (divide and value == 0):
                return None
            factor = factor / value if divide else factor * value
    return factor


def _sensor(row: _Row, metric: MetricSpec) -> str:
    name = text(row.resolve(metric.sensor)).replace("{index}", row.index)
    if not name:
        name = row.index
    return name[:_MAX_NAME]


def _location(row: _Row, metric: MetricSpec, sensor: str) -> Location | None:
    if metric.quantity not in LOCATED:
        return None
    if metric.location is not None:
        resolved = text(row.resolve(metric.location))
        if resolved in Location.__members__.values():
            return Location(resolved)
    for rule in metric.location_rules:
        if rule.regex.search(sensor):
            return rule.location
    return Location.OTHER


def _scaled(
    row: _Row, metric: MetricSpec, raw: RawValue, scale: float, offset: float
) -> float | None:
    """Apply invalid sentinels, scale, per-row factors, offset and unit conversion."""
    if metric.invalid and text(raw) in metric.invalid:
        return None
    value = number(raw)
    factor = _factor(row, metric)
    if value is None or factor is None:
        return None
    value = value * scale * factor + offset
    if metric.unit is not None:
        unit = text(row.resolve(metric.unit))
        converted = to_celsius(value, unit) if unit else None
        return None if converted is None else round(converted, 6)
    # Scaling decimal fixed-point (tenths, percent) must not export 81.60000000000001.
    return round(value, 6)


def _readings_for_row(row: _Row, metric: MetricSpec, raw: RawValue, scale: float) -> list[Reading]:
    sensor = _sensor(row, metric)
    location = _location(row, metric, sensor)
    if metric.map is not None:
        shown = text(raw)
        if metric.invalid and shown in metric.invalid:
            return []
        mapped = metric.map.get(shown, metric.default)
        if mapped is None:
            return []
        if metric.quantity in _STATES:
            return [
                Reading(
                    metric.quantity,
                    sensor,
                    0.0,
                    location,
                    state=str(mapped),
                    hw_type=metric.hw_type,
                )
            ]
        value = number(mapped)
    else:
        value = _scaled(row, metric, raw, scale, metric.offset)
    if value is None:
        return []
    out = [Reading(metric.quantity, sensor, value, location, hw_type=metric.hw_type)]
    for limit_type, ref in metric.limits.items():
        limit_scale = ref.scale if ref.scale is not None else metric.scale
        limit = _scaled(row, metric, row.resolve(ref), limit_scale, metric.offset)
        if limit is not None:
            out.append(Reading(metric.quantity, sensor, limit, location, limit_type=limit_type))
    return out


def _metric_readings(metric: MetricSpec, fetched: Fetched) -> tuple[list[Reading], str | None]:
    """Readings of one metric spec, or the reason it was skipped."""
    if metric.table is None:
        assert metric.oid is not None  # noqa: S101 - guaranteed by MetricSpec validation
        row = _Row(fetched, None, "0")
        scalars = fetched.scalars
        raw = scalars.get(metric.oid)
        if raw is not None and _keep(row, metric.when):
            readings = _readings_for_row(row, metric, raw, metric.scale)
            if readings:
                return readings, None
        for fallback in metric.fallback:
            raw = scalars.get(fallback.oid)
            if raw is not None and _keep(row, metric.when):
                readings = _readings_for_row(row, metric, raw, fallback.scale)
                if readings:
                    return readings, None
        return [], None
    if fetched.failed:
        failed = [fetched.failed[c] for c in sorted(metric.column_oids()) if c in fetched.failed]
        if failed:
            return [], failed[0]
    if metric.aggregate is not None:
        return _aggregate(metric, fetched), None
    out: list[tuple[str, list[Reading]]] = []
    for index, raw in fetched.columns.get(f"{metric.table}.{metric.value}", {}).items():
        row = _Row(fetched, metric.table, index)
        if _keep(row, metric.when):
            out.append((index, _readings_for_row(row, metric, raw, metric.scale)))
    # Two rows with one name (e.g. unnamed probes all called "Unknown") would produce duplicate
    # series, which Prometheus rejects: tell them apart by their index.
    names = [rs[0].sensor for _, rs in out if rs]
    if len(set(names)) == len(names):
        return [r for _, rs in out for r in rs], None
    counts = Counter(names)
    result: list[Reading] = []
    for index, rs in out:
        result.extend(
            replace(r, sensor=f"{r.sensor} ({index})") if counts[r.sensor] > 1 else r for r in rs
        )
    return result, None


def _aggregate(metric: MetricSpec, fetched: Fetched) -> list[Reading]:
    """One reading summarising the kept rows: whether there are any, or how many.

    An empty (but successfully walked) table counts as 0: for an active-conditions table,
    absence of a row is the device saying the condition is not present. Conditions on a
    scalar `oid` gate the whole reading, so that a device without the table (whose walk is
    just as empty) is not reported as having no alarms.
    """
    gates = [c for c in metric.when if c.oid is not None]
    scalar_row = _Row(fetched, None, "0")
    if gates and not _keep(scalar_row, gates):
        return []
    rows = fetched.columns.get(f"{metric.table}.{metric.value}", {})
    kept = sum(1 for index in rows if _keep(_Row(fetched, metric.table, index), metric.when))
    value = float(min(kept, 1) if metric.aggregate == "any" else kept)
    # Sensor, location and limits come from constants or scalars: evaluate them as a scalar.
    return _readings_for_row(scalar_row, metric, value, metric.scale)


def device_info(profile: Profile, scalars: Mapping[str, RawValue] | Fetched) -> DeviceInfo:
    """The vendor/model/firmware a profile's info entries point at."""
    row = _Row(
        scalars if isinstance(scalars, Fetched) else Fetched(scalars=dict(scalars)), None, "0"
    )
    values = {key: text(row.resolve(ref))[:_MAX_NAME] for key, ref in profile.spec.info.items()}
    return DeviceInfo(
        vendor=values.get("vendor", ""),
        model=values.get("model", ""),
        firmware=values.get("firmware", ""),
        profile=profile.name,
    )


def normalize(profile: Profile, fetched: Fetched) -> DeviceData:
    """Evaluate every metric of a profile against fetched values."""
    readings: list[Reading] = []
    partial: set[str] = set()
    for metric in profile.metrics:
        got, skipped = _metric_readings(metric, fetched)
        readings.extend(got)
        if skipped:
            partial.add(skipped)
    return DeviceData(
        info=device_info(profile, fetched),
        readings=tuple(readings),
        partial_errors=tuple(sorted(partial)),
    )
