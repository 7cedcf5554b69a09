"""The SNMP profile format: strict pydantic models for one mibs/*.yaml file, the loaded
Profile (includes resolved) and device matching.

docs/profiles.md describes every key with examples. Reading files and resolving includes is
poller.profiles' job (the same for every protocol); evaluation against fetched values is in
poller.snmp.evaluate.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from poller.model import (
    LIMITED,
    LOCATED,
    HwType,
    LimitType,
    Location,
    PowerSource,
    Quantity,
    State,
)
from poller.profiles import LoadedBase

if TYPE_CHECKING:
    from poller.profiles import ProfileSet
    from poller.snmp.evaluate import ProfilePlan

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"

# Raw SNMP value as delivered by the transport.
RawValue = None | str | bytes | int | float


def _oid(value: Any) -> Any:
    """Normalise an OID written in a profile: strip a leading dot, check it is numeric."""
    if not isinstance(value, str):
        value = str(value)
    text = value.strip().lstrip(".")
    if not re.fullmatch(r"\d+(\.\d+)+", text):
        raise ValueError(f"{value!r} is not a numeric OID")
    return text


Oid = Annotated[str, BeforeValidator(_oid)]


def _str_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    return value


def _str_list(value: Any) -> Any:
    if isinstance(value, list):
        return [str(x) for x in value]
    return value


def _regex(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None


StrList = Annotated[list[str], BeforeValidator(_str_list)]
StrMap = Annotated[dict[str, str | float], BeforeValidator(_str_keys)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Ref(_Strict):
    """Where a value comes from: a column of the same table row, a scalar OID, or a constant.

    `table` reads the column from another table indexed the same way (APC keeps thresholds
    in a config table beside the status table, for example).
    """

    column: int | None = Field(default=None, ge=0)
    table: Oid | None = None
    oid: Oid | None = None
    value: str | float | None = None
    map: StrMap | None = None
    default: str | float | None = None
    scale: float | None = None
    # A text template for names: "{value}" is replaced by the resolved value.
    format: str | None = None
    # Raw values meaning "not set" (e.g. a threshold of -99 or 0): treated as absent.
    invalid: StrList = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_source(self) -> Ref:
        sources = [s for s in (self.column, self.oid, self.value) if s is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of column, oid or value")
        if self.table is not None and self.column is None:
            raise ValueError("table only applies together with column")
        return self


def _ref(value: Any) -> Any:
    """A bare string or number in a profile is a constant."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return {"value": value}
    return value


RefSpec = Annotated[Ref, BeforeValidator(_ref)]


class Condition(_Strict):
    """Keep a row only when a column, a scalar or the row index is, or is not, in a set, or
    matches (or does not match) a regular expression."""

    column: int | None = Field(default=None, ge=0)
    table: Oid | None = None
    oid: Oid | None = None
    index: bool = False
    in_: StrList | None = Field(default=None, alias="in")
    not_in: StrList | None = None
    match: str | None = None
    not_match: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> Condition:
        if [self.column is not None, self.oid is not None, self.index].count(True) != 1:
            raise ValueError("give exactly one of column, oid or index: true")
        if self.table is not None and self.column is None:
            raise ValueError("table only applies together with column")
        tests = [self.in_, self.not_in, self.match, self.not_match]
        if sum(t is not None for t in tests) != 1:
            raise ValueError("give exactly one of in, not_in, match or not_match")
        for pattern in (self.match, self.not_match):
            if pattern is not None:
                _regex(pattern)
        return self

    @cached_property
    def test(self) -> Callable[[str], bool]:
        """The condition as one function of the row's value, compiled once."""
        if self.in_ is not None:
            return frozenset(self.in_).__contains__
        if self.not_in is not None:
            excluded = frozenset(self.not_in)
            return lambda value: value not in excluded
        if self.match is not None:
            search = re.compile(self.match).search
            return lambda value: search(value) is not None
        search = re.compile(self.not_match or "").search
        return lambda value: search(value) is None


class LocationRule(_Strict):
    """Pick a location when the sensor name matches a regular expression."""

    match: str
    location: Location

    @model_validator(mode="after")
    def _check(self) -> LocationRule:
        _regex(self.match)
        return self

    @cached_property
    def regex(self) -> re.Pattern[str]:
        """The pattern, compiled once."""
        return re.compile(self.match)


class Fallback(_Strict):
    """An alternative scalar OID read when the preferred one is missing."""

    oid: Oid
    scale: float = 1.0


class MetricSpec(_Strict):
    """One entry of a profile's `metrics:` list: a scalar or a table column -> readings."""

    quantity: Quantity
    oid: Oid | None = None  # a scalar, fetched with GET
    table: Oid | None = None  # a table entry OID; columns below it are walked
    value: int | None = Field(default=None, ge=0)  # the column holding the value
    fallback: list[Fallback] = Field(default_factory=list)
    scale: float = 1.0
    offset: float = 0.0
    # Per-row factors (e.g. a scale or precision column) applied to the value and its limits.
    multiply_by: list[RefSpec] = Field(default_factory=list)
    divide_by: list[RefSpec] = Field(default_factory=list)
    unit: RefSpec | None = None  # temperature unit: celsius, fahrenheit or kelvin
    invalid: StrList = Field(default_factory=list)
    map: StrMap | None = None
    default: str | float | None = None
    sensor: RefSpec = Field(default_factory=lambda: Ref(value="{index}"))
    location: RefSpec | None = None
    location_rules: list[LocationRule] = Field(default_factory=list)
    hw_type: HwType | None = None
    when: list[Condition] = Field(default_factory=list)
    limits: dict[LimitType, RefSpec] = Field(default_factory=dict)
    # Collapse the kept rows of a table into one reading: `any` is 1 when at least one row
    # is kept (else 0), `count` the number of kept rows. For tables whose rows exist only
    # while something is true, such as active-alarm tables.
    aggregate: Literal["any", "count"] | None = None

    @model_validator(mode="after")
    def _shape(self) -> MetricSpec:
        if (self.oid is None) == (self.table is None):
            raise ValueError("give exactly one of oid (a scalar) or table (with value)")
        if self.table is not None and self.value is None:
            raise ValueError("a table metric needs value: the column number holding the value")
        if self.oid is not None and self.value is not None:
            raise ValueError("value (a column number) only applies to table metrics")
        if self.table is None:
            uses_columns = any(r.column is not None for r in self._refs()) or any(
                c.column is not None or c.index for c in self.when
            )
            if uses_columns:
                raise ValueError("column references only work in table metrics")
        if self.aggregate is not None:
            self._check_aggregate()
        if self.quantity == Quantity.STATUS:
            if self.hw_type is None:
                raise ValueError("a status metric needs hw_type")
            self._check_states(State, "ok, degraded, failed")
        elif self.quantity == Quantity.UPS_POWER_SOURCE:
            self._check_states(PowerSource, ", ".join(PowerSource))
        if self.limits and self.quantity not in LIMITED:
            raise ValueError(f"limits are not exported for {self.quantity}")
        if (self.location or self.location_rules) and self.quantity not in LOCATED:
            raise ValueError(f"location does not apply to {self.quantity}")
        return self

    def _check_aggregate(self) -> None:
        if self.table is None:
            raise ValueError("aggregate only applies to table metrics")
        if "sensor" not in self.model_fields_set:
            raise ValueError("an aggregate metric needs a sensor name")
        row_refs = [self.sensor, *self.limits.values(), *self.multiply_by, *self.divide_by]
        row_refs += [r for r in (self.unit, self.location) if r is not None]
        if any(r.column is not None for r in row_refs):
            raise ValueError(
                "an aggregate metric is one reading: sensor, location and limits "
                "cannot come from a column"
            )

    def _check_states(self, enum: type[State] | type[PowerSource], allowed: str) -> None:
        if self.map is None:
            raise ValueError(f"a {self.quantity} metric needs map: raw value -> state")
        for state in [*self.map.values(), *([self.default] if self.default is not None else [])]:
            if str(state) not in {e.value for e in enum}:
                raise ValueError(f"state {state!r} is not one of {allowed}")

    def _refs(self) -> list[Ref]:
        refs = [self.sensor, *self.limits.values(), *self.multiply_by, *self.divide_by]
        return refs + [r for r in (self.unit, self.location) if r is not None]

    def scalar_oids(self) -> set[str]:
        """Every OID this metric needs fetched with GET."""
        oids = {r.oid for r in self._refs() if r.oid is not None}
        oids |= {c.oid for c in self.when if c.oid is not None}
        if self.oid is not None:
            oids.add(self.oid)
            oids |= {f.oid for f in self.fallback}
        return oids

    def column_oids(self) -> set[str]:
        """Every table column OID this metric needs walked."""
        if self.table is None:
            return set()
        oids = {f"{self.table}.{self.value}"}
        oids |= {
            f"{r.table or self.table}.{r.column}" for r in self._refs() if r.column is not None
        }
        oids |= {f"{c.table or self.table}.{c.column}" for c in self.when if c.column is not None}
        return oids


class MatchSpec(_Strict):
    """How a device is recognised without an explicit `profile:`.

    Two tests, each passing when any of its entries holds: identity (`sys_object_id`
    prefixes, `sys_descr` patterns) and presence (`oid_exists` GETs, `subtree` GETNEXTs
    landing inside the MIB). A profile applies when every test it lists passes; one that
    lists neither applies only where included.
    """

    sys_object_id: list[Oid] = Field(default_factory=list)  # prefixes
    sys_descr: list[str] = Field(default_factory=list)  # regular expressions
    oid_exists: list[Oid] = Field(default_factory=list)  # any of these answering a GET
    subtree: list[Oid] = Field(default_factory=list)  # a GETNEXT lands below any of these
    # A generic MIB (e.g. ENTITY-SENSOR): applies beside others, but every non-fallback
    # profile supersedes it for the kinds of reading both produce.
    fallback: bool = False

    @model_validator(mode="after")
    def _check(self) -> MatchSpec:
        for pattern in self.sys_descr:
            _regex(pattern)
        if self.fallback and not (self.oid_exists or self.subtree):
            raise ValueError("fallback needs a presence test: oid_exists or subtree")
        return self

    @property
    def has_identity(self) -> bool:
        """Whether the profile names sysObjectID prefixes or sysDescr patterns."""
        return bool(self.sys_object_id or self.sys_descr)

    @property
    def has_presence(self) -> bool:
        """Whether the profile is recognised by its MIB's objects answering."""
        return bool(self.oid_exists or self.subtree)

    @property
    def standalone(self) -> bool:
        """Whether the profile can apply to a device on its own (not only when included)."""
        return self.has_identity or self.has_presence


class SnmpProfile(_Strict):
    """A profile for devices polled over SNMP."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    protocol: Literal["snmp"] = "snmp"
    description: str = ""
    match: MatchSpec = Field(default_factory=MatchSpec)
    include: list[str] = Field(default_factory=list)
    # Profiles whose readings this one replaces, kind by kind (see docs/profiles.md).
    supersedes: list[str] = Field(default_factory=list)
    info: dict[Literal["vendor", "model", "firmware"], RefSpec] = Field(default_factory=dict)
    metrics: list[MetricSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _info_scalars(self) -> SnmpProfile:
        if any(r.column is not None for r in self.info.values()):
            raise ValueError("info entries take oid or value, not column")
        return self


def oid_key(oid: str) -> tuple[int, ...]:
    """Sort key that orders OIDs numerically, as agents do."""
    return tuple(int(p) for p in oid.split("."))


@dataclass(frozen=True)
class Profile(LoadedBase):
    """A loaded SNMP profile with its includes resolved."""

    spec: SnmpProfile
    source: str
    metrics: tuple[MetricSpec, ...]
    # Every profile this one includes, directly or through nested includes.
    included: frozenset[str] = frozenset()

    @cached_property
    def scalar_oids(self) -> tuple[str, ...]:
        """Sorted OIDs to GET on each poll."""
        oids: set[str] = {r.oid for r in self.spec.info.values() if r.oid is not None}
        for metric in self.metrics:
            oids |= metric.scalar_oids()
        return tuple(sorted(oids, key=oid_key))

    @cached_property
    def plan(self) -> ProfilePlan:
        """The profile compiled for evaluation, once, shared by every target using it."""
        from poller.snmp.evaluate import ProfilePlan  # noqa: PLC0415 - evaluate imports this module

        return ProfilePlan(self)

    @cached_property
    def column_oids(self) -> tuple[str, ...]:
        """Sorted table column OIDs to walk on each poll."""
        cols: set[str] = set()
        for metric in self.metrics:
            cols |= metric.column_oids()
        return tuple(sorted(cols, key=oid_key))


def compile_profile(spec: BaseModel, source: str, included: Sequence[BaseModel]) -> Profile:
    """The loaded profile: its metrics followed by those of everything it includes."""
    if not isinstance(spec, SnmpProfile):  # pragma: no cover - the registry routes by model
        raise TypeError("not an SNMP profile")
    metrics = list(spec.metrics)
    for other in included:
        if isinstance(other, SnmpProfile):
            metrics.extend(other.metrics)
    return Profile(
        spec=spec,
        source=source,
        metrics=tuple(metrics),
        included=frozenset(p.name for p in included if isinstance(p, SnmpProfile)),
    )


def candidates(profiles: ProfileSet, sys_object_id: str, sys_descr: str) -> list[Profile]:
    """Standalone SNMP profiles whose identity test holds, in precedence order.

    The order decides which of two sources of one series wins: a longer sysObjectID
    prefix first, then a sysDescr match, then profiles recognised only by their MIB's
    objects, generic (`fallback`) MIBs last, by name within each rank. Those with a
    presence test (oid_exists, subtree) are still to be probed by the caller.
    """
    ranked: list[tuple[tuple[int, int, str], Profile]] = []
    for profile in profiles.of_type(Profile):
        match = profile.spec.match
        if not match.standalone:
            continue
        rank = 2
        if match.has_identity:
            lengths = [
                len(p)
                for p in match.sys_object_id
                if sys_object_id == p or sys_object_id.startswith(p + ".")
            ]
            if lengths:
                rank = -max(lengths)
            elif any(re.search(p, sys_descr) for p in match.sys_descr):
                rank = 1
            else:
                continue
        ranked.append(((int(match.fallback), rank, profile.name), profile))
    ranked.sort(key=lambda item: item[0])
    return [p for _, p in ranked]


def describe_match(spec: BaseModel) -> list[str]:
    """How a profile is recognised, one entry per test, for `hwpoller profiles`."""
    if not isinstance(spec, SnmpProfile):
        return []
    match, how = spec.match, []
    for values, label in (
        (match.sys_object_id, "sysObjectID"),
        (match.sys_descr, "sysDescr"),
        (match.oid_exists, "answers"),
        (match.subtree, "has objects under"),
    ):
        if values:
            how.append(f"{label} {', '.join(values)}")
    if how and match.fallback:
        how.append("generic fallback, superseded by every other profile")
    return how
