"""Turn values fetched from a device into normalised Readings, as a profile says. Pure.

Each profile is compiled once into a ProfilePlan (kept on the loaded Profile), so that a poll
is lookups and one loop per metric: no per-poll regex, sorting or model access."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from poller.model import (
    LOCATED,
    DeviceData,
    DeviceInfo,
    Location,
    Quantity,
    Reading,
)
from poller.snmp.profile import Condition, MetricSpec, RawValue, Ref

if TYPE_CHECKING:
    from poller.snmp.profile import Profile

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


# --- the compiled form of a profile ---------------------------------------------------------
#
# A profile is compiled once (ProfilePlan, cached on the loaded Profile and shared by every
# target using it): each reference becomes the column key or scalar OID it reads plus what
# resolving does to the value, constants are resolved up front, and scalar conditions are
# separated from per-row ones. A poll is then dictionary lookups and one loop per metric.

Columns = dict[str, dict[str, RawValue]]
Scalars = dict[str, RawValue]
# Reads a reference's raw value and resolves it: (columns, scalars, row index) -> value.
Getter = Callable[[Columns, Scalars, str], RawValue]
# A compiled reference: (constant, None) or (None, getter).
Source = tuple[RawValue, Getter | None]

_EMPTY: dict[str, RawValue] = {}  # an absent column; never written
_INDEX, _COLUMN, _SCALAR = 0, 1, 2
_MEMO = 1024  # location rule results kept per metric (sensor name -> location)
_LOCATIONS = {location.value: location for location in Location}


def _post(ref: Ref) -> Callable[[RawValue], RawValue] | None:
    """What resolving a reference does to the raw value it read: invalid sentinels, map,
    default, format. None when it changes nothing any reader can tell: without a format,
    a blank value and an absent one read the same (as text "" and as no number)."""
    invalid = frozenset(ref.invalid)
    mapping, default, template = ref.map, ref.default, ref.format
    if not invalid and mapping is None and default is None and template is None:
        return None

    def post(raw: RawValue) -> RawValue:
        if invalid and text(raw) in invalid:
            raw = None
        if mapping is not None:
            raw = mapping.get(text(raw), default)
        elif raw is None or (type(raw) is not int and text(raw) == ""):
            raw = default
        if template is not None and raw is not None:
            return template.replace("{value}", text(raw))
        return raw

    return post


def _source(ref: Ref, table: str | None) -> Source:
    """Compile a reference of a metric on `table` (None for a scalar metric)."""
    post = _post(ref)
    if ref.value is not None:
        return (ref.value if post is None else post(ref.value)), None
    if ref.column is not None:
        key = f"{ref.table or table}.{ref.column}"

        def column(cols: Columns, scalars: Scalars, index: str) -> RawValue:
            return cols.get(key, _EMPTY).get(index)

        getter: Getter = column
    else:
        oid = ref.oid or ""

        def scalar(cols: Columns, scalars: Scalars, index: str) -> RawValue:
            return scalars.get(oid)

        getter = scalar
    if post is None:
        return None, getter
    read = getter

    def resolved(cols: Columns, scalars: Scalars, index: str) -> RawValue:
        return post(read(cols, scalars, index))

    return None, resolved


def _conditions(
    conditions: Iterable[Condition], table: str | None
) -> tuple[tuple[int, str, Callable[[str], bool]], ...]:
    """(kind, column key or OID, test) for each condition, in order."""
    out = []
    for cond in conditions:
        if cond.index:
            out.append((_INDEX, "", cond.test))
        elif cond.column is not None:
            out.append((_COLUMN, f"{cond.table or table}.{cond.column}", cond.test))
        else:
            out.append((_SCALAR, cond.oid or "", cond.test))
    return tuple(out)


def _keep(
    conditions: tuple[tuple[int, str, Callable[[str], bool]], ...],
    cols: Columns,
    scalars: Scalars,
    index: str,
) -> bool:
    for kind, key, test in conditions:
        if kind == _COLUMN:
            value = text(cols.get(key, _EMPTY).get(index))
        elif kind == _SCALAR:
            value = text(scalars.get(key))
        else:
            value = index
        if not test(value):
            return False
    return True


class _MetricPlan:
    """One MetricSpec, compiled."""

    __slots__ = (
        "aggregate",
        "candidates",
        "columns",
        "conditions",
        "default",
        "factors",
        "fallback",
        "fixed_location",
        "gates",
        "hw_type",
        "invalid",
        "limits",
        "located",
        "location",
        "map",
        "memo",
        "offset",
        "oid",
        "quantity",
        "row_conditions",
        "rules",
        "scale",
        "sensor",
        "sensor_index",
        "sensor_name",
        "states",
        "unit",
        "unit_name",
        "value_key",
    )

    def __init__(self, metric: MetricSpec) -> None:
        table = metric.table
        self.quantity = metric.quantity
        self.hw_type = metric.hw_type
        self.oid = metric.oid
        self.value_key = f"{table}.{metric.value}" if table is not None else ""
        self.fallback = tuple((f.oid, f.scale) for f in metric.fallback)
        # A scalar metric's OIDs in the order tried: its own, then the fallbacks.
        self.candidates = ((metric.oid or "", metric.scale), *self.fallback)
        self.scale, self.offset = metric.scale, metric.offset
        self.invalid = frozenset(metric.invalid)
        self.map, self.default = metric.map, metric.default
        self.states = metric.quantity in _STATES
        self.aggregate = metric.aggregate
        # The columns it reads, in the order a failure among them is reported.
        self.columns = tuple(sorted(metric.column_oids()))
        self.conditions = _conditions(metric.when, table)
        self.gates = tuple(c for c in self.conditions if c[0] == _SCALAR)
        self.row_conditions = tuple(c for c in self.conditions if c[0] != _SCALAR)
        self.sensor = _source(metric.sensor, table)
        const, getter = self.sensor
        # A constant name as text, or None; the default name is the row index itself.
        self.sensor_name = text(const) if getter is None else None
        self.sensor_index = self.sensor_name == "{index}"
        self.located = metric.quantity in LOCATED
        self.location = _source(metric.location, table) if metric.location is not None else None
        self.fixed_location: Location | None = None
        if self.location is not None and self.location[1] is None:
            # A constant: the rules decide only when it is not a location's name.
            self.fixed_location = _LOCATIONS.get(text(self.location[0]))
            self.location = None
        self.rules = tuple((rule.regex.search, rule.location) for rule in metric.location_rules)
        self.memo: dict[str, Location] = {}
        self.factors = tuple(
            (_source(ref, table), divide)
            for refs, divide in ((metric.multiply_by, False), (metric.divide_by, True))
            for ref in refs
        )
        self.unit = _source(metric.unit, table) if metric.unit is not None else None
        self.unit_name = (
            text(self.unit[0]) if self.unit is not None and self.unit[1] is None else None
        )
        self.limits = tuple(
            (
                limit_type,
                _source(ref, table),
                ref.scale if ref.scale is not None else metric.scale,
            )
            for limit_type, ref in metric.limits.items()
        )

    def readings(self, fetched: Fetched) -> tuple[list[Reading], str | None]:
        """Readings of this metric, or the reason it was skipped."""
        cols, scalars = fetched.columns, fetched.scalars
        if not self.value_key:
            keep: bool | None = None  # the conditions, evaluated when first needed
            for oid, scale in self.candidates:
                raw = scalars.get(oid)
                if raw is None:
                    continue
                if keep is None:
                    keep = _keep(self.conditions, cols, scalars, "0")
                if keep:
                    got = self._row(cols, scalars, "0", raw, scale)
                    if got:
                        return got, None
            return [], None
        failed = fetched.failed
        if failed:
            for column in self.columns:
                if column in failed:
                    return [], failed[column]
        if self.gates and not _keep(self.gates, cols, scalars, ""):
            return [], None  # a scalar condition drops every row (and an aggregate)
        rows = cols.get(self.value_key, _EMPTY)
        conditions = self.row_conditions
        if self.aggregate is not None:
            kept = sum(1 for index in rows if _keep(conditions, cols, scalars, index))
            value = float(min(kept, 1) if self.aggregate == "any" else kept)
            # Sensor, location and limits come from constants or scalars: one scalar row.
            return self._row(cols, scalars, "0", value, self.scale), None
        out: list[Reading] = []
        names: list[str] = []
        starts: list[tuple[str, int]] = []  # (row index, position of its first reading)
        row = self._row
        scale = self.scale
        for index, raw in rows.items():
            if conditions and not _keep(conditions, cols, scalars, index):
                continue
            got = row(cols, scalars, index, raw, scale)
            if got:
                starts.append((index, len(out)))
                names.append(got[0].sensor)
                out.extend(got)
        if len(set(names)) == len(names):
            return out, None
        # Two rows with one name (e.g. unnamed probes all called "Unknown") would produce
        # duplicate series, which Prometheus rejects: tell them apart by their index.
        counts = Counter(names)
        ends = [start for _, start in starts[1:]] + [len(out)]
        result: list[Reading] = []
        for (index, start), end in zip(starts, ends, strict=True):
            result.extend(
                r._replace(sensor=f"{r.sensor} ({index})") if counts[r.sensor] > 1 else r
                for r in out[start:end]
            )
        return result, None

    def _row(
        self, cols: Columns, scalars: Scalars, index: str, raw: RawValue, scale: float
    ) -> list[Reading]:
        """The readings of one row (index "0" for a scalar metric)."""
        if self.sensor_index:
            sensor = index
        else:
            name = self.sensor_name
            if name is None:
                getter = self.sensor[1]
                name = text(getter(cols, scalars, index)) if getter is not None else ""
            sensor = (name.replace("{index}", index) if "{index}" in name else name) or index
        if len(sensor) > _MAX_NAME:
            sensor = sensor[:_MAX_NAME]
        location = self._location(cols, scalars, index, sensor) if self.located else None
        quantity = self.quantity
        mapping = self.map
        if mapping is not None:
            shown = str(raw) if type(raw) is int else text(raw)
            if self.invalid and shown in self.invalid:
                return []
            mapped = mapping.get(shown, self.default)
            if mapped is None:
                return []
            if self.states:
                return [
                    Reading(
                        quantity, sensor, 0.0, location, state=str(mapped), hw_type=self.hw_type
                    )
                ]
            value = number(mapped)
            if value is None:
                return []
            if not self.limits:
                return [Reading(quantity, sensor, value, location, hw_type=self.hw_type)]
            factor, unit = self._conversion(cols, scalars, index)
        else:
            factor, unit = self._conversion(cols, scalars, index)
            value = self._scaled(raw, scale, factor, unit)
            if value is None:
                return []
        out = [Reading(quantity, sensor, value, location, hw_type=self.hw_type)]
        for limit_type, (const, getter), limit_scale in self.limits:
            limit_raw = const if getter is None else getter(cols, scalars, index)
            limit = self._scaled(limit_raw, limit_scale, factor, unit)
            if limit is not None:
                out.append(Reading(quantity, sensor, limit, location, limit_type=limit_type))
        return out

    def _location(self, cols: Columns, scalars: Scalars, index: str, sensor: str) -> Location:
        if self.fixed_location is not None:
            return self.fixed_location
        if self.location is not None:
            const, getter = self.location
            resolved = text(const if getter is None else getter(cols, scalars, index))
            named = _LOCATIONS.get(resolved)
            if named is not None:
                return named
        if not self.rules:
            return Location.OTHER
        memo = self.memo
        found = memo.get(sensor)
        if found is None:
            found = Location.OTHER
            for search, location in self.rules:
                if search(sensor):
                    found = location
                    break
            if len(memo) >= _MEMO:
                memo.clear()
            memo[sensor] = found
        return found

    def _conversion(
        self, cols: Columns, scalars: Scalars, index: str
    ) -> tuple[float | None, str | None]:
        """A row's factor (the product of its multipliers over its divisors; None if one is
        unknown or a divisor 0) and unit name (None: the metric names no unit), shared by
        its value and its limits."""
        if not self.factors and self.unit is None:
            return 1.0, None
        factor: float | None = 1.0
        product = 1.0
        for (const, getter), divide in self.factors:
            by = number(const if getter is None else getter(cols, scalars, index))
            if by is None or (divide and by == 0):
                factor = None
                break
            product = product / by if divide else product * by
        else:
            factor = product
        unit = None
        if self.unit is not None:
            unit = self.unit_name
            if unit is None:
                getter = self.unit[1]
                unit = text(getter(cols, scalars, index)) if getter is not None else ""
        return factor, unit

    def _scaled(
        self, raw: RawValue, scale: float, factor: float | None, unit: str | None
    ) -> float | None:
        """Apply invalid sentinels, scale, the row's factor, offset and unit conversion."""
        if self.invalid and (str(raw) if type(raw) is int else text(raw)) in self.invalid:
            return None
        value = float(raw) if type(raw) is int else number(raw)
        if value is None or factor is None:
            return None
        value = value * scale * factor + self.offset
        if unit is not None:
            converted = to_celsius(value, unit) if unit else None
            return None if converted is None else round(converted, 6)
        # Scaling decimal fixed-point (tenths, percent) must not export 81.60000000000001.
        return round(value, 6)


class ProfilePlan:
    """A profile compiled for evaluation: `plan(fetched)` is normalize(profile, fetched)."""

    __slots__ = ("info", "metrics", "name")

    def __init__(self, profile: Profile) -> None:
        self.name = profile.name
        self.metrics = tuple(_MetricPlan(m) for m in profile.metrics)
        self.info = tuple((key, _source(ref, None)) for key, ref in profile.spec.info.items())

    def device_info(self, scalars: Scalars) -> DeviceInfo:
        """The vendor/model/firmware the profile's info entries point at."""
        values: dict[str, str] = {}
        for key, (const, getter) in self.info:
            values[key] = text(const if getter is None else getter(_EMPTY_COLUMNS, scalars, "0"))[
                :_MAX_NAME
            ]
        return DeviceInfo(
            vendor=values.get("vendor", ""),
            model=values.get("model", ""),
            firmware=values.get("firmware", ""),
            profile=self.name,
        )

    def __call__(self, fetched: Fetched) -> DeviceData:
        readings: list[Reading] = []
        partial: set[str] = set()
        for metric in self.metrics:
            got, skipped = metric.readings(fetched)
            readings.extend(got)
            if skipped:
                partial.add(skipped)
        return DeviceData(
            info=self.device_info(fetched.scalars),
            readings=tuple(readings),
            partial_errors=tuple(sorted(partial)),
        )


_EMPTY_COLUMNS: Columns = {}


def device_info(profile: Profile, scalars: Mapping[str, RawValue] | Fetched) -> DeviceInfo:
    """The vendor/model/firmware a profile's info entries point at."""
    values = scalars.scalars if isinstance(scalars, Fetched) else dict(scalars)
    return profile.plan.device_info(values)


def normalize(profile: Profile, fetched: Fetched) -> DeviceData:
    """Evaluate every metric of a profile against fetched values."""
    return profile.plan(fetched)
