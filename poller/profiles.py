"""Device profiles as data: load mibs/*.yaml into Profile objects and match devices to them.

A profile says which OIDs to GET and which table columns to walk, and how each value
becomes a normalised Reading (see docs/profiles.md for the format). Evaluating a profile
against fetched values is pure: no I/O happens here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from poller.errors import ProfileError
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

BUILTIN_PROFILE_DIR = Path(__file__).resolve().parent.parent / "mibs"
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
    map: Annotated[dict[str, str | float], BeforeValidator(_str_keys)] | None = None
    default: str | float | None = None
    scale: float | None = None

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
    """Keep a row only when a column, a scalar or the row index is, or is not, in a set."""

    column: int | None = Field(default=None, ge=0)
    oid: Oid | None = None
    index: bool = False
    in_: Annotated[list[str], BeforeValidator(lambda v: [str(x) for x in v])] | None = Field(
        default=None, alias="in"
    )
    not_in: Annotated[list[str], BeforeValidator(lambda v: [str(x) for x in v])] | None = None

    @model_validator(mode="after")
    def _shape(self) -> Condition:
        if [self.column is not None, self.oid is not None, self.index].count(True) != 1:
            raise ValueError("give exactly one of column, oid or index: true")
        if (self.in_ is None) == (self.not_in is None):
            raise ValueError("give exactly one of in or not_in")
        return self


class LocationRule(_Strict):
    """Pick a location when the sensor name matches a regular expression."""

    match: str
    location: Location

    @model_validator(mode="after")
    def _regex(self) -> LocationRule:
        try:
            re.compile(self.match)
        except re.error as exc:
            raise ValueError(f"bad regular expression {self.match!r}: {exc}") from None
        return self


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
    unit: RefSpec | None = None  # temperature unit: celsius, fahrenheit or kelvin
    invalid: Annotated[list[str], BeforeValidator(lambda v: [str(x) for x in v])] = Field(
        default_factory=list
    )
    map: Annotated[dict[str, str | float], BeforeValidator(_str_keys)] | None = None
    default: str | float | None = None
    sensor: RefSpec = Field(default_factory=lambda: Ref(value="{index}"))
    location: RefSpec | None = None
    location_rules: list[LocationRule] = Field(default_factory=list)
    hw_type: HwType | None = None
    when: list[Condition] = Field(default_factory=list)
    limits: dict[LimitType, RefSpec] = Field(default_factory=dict)

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

    def _check_states(self, enum: type[State] | type[PowerSource], allowed: str) -> None:
        if self.map is None:
            raise ValueError(f"a {self.quantity} metric needs map: raw value -> state")
        for state in [*self.map.values(), *([self.default] if self.default is not None else [])]:
            if str(state) not in {e.value for e in enum}:
                raise ValueError(f"state {state!r} is not one of {allowed}")

    def _refs(self) -> list[Ref]:
        refs = [self.sensor, *self.limits.values()]
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
        oids |= {f"{self.table}.{c.column}" for c in self.when if c.column is not None}
        return oids


class MatchSpec(_Strict):
    """How a device is recognised without an explicit `profile:`."""

    sys_object_id: list[Oid] = Field(default_factory=list)  # prefixes
    sys_descr: list[str] = Field(default_factory=list)  # regular expressions
    oid_exists: list[Oid] = Field(default_factory=list)  # any of these answering


class SnmpProfile(_Strict):
    """A profile for devices polled over SNMP."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    protocol: Literal["snmp"] = "snmp"
    description: str = ""
    match: MatchSpec = Field(default_factory=MatchSpec)
    include: list[str] = Field(default_factory=list)
    info: dict[Literal["vendor", "model", "firmware"], RefSpec] = Field(default_factory=dict)
    metrics: list[MetricSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _info_scalars(self) -> SnmpProfile:
        if any(r.column is not None for r in self.info.values()):
            raise ValueError("info entries take oid or value, not column")
        return self


@dataclass(frozen=True)
class Profile:
    """A loaded profile with its includes resolved."""

    spec: SnmpProfile
    source: str
    metrics: tuple[MetricSpec, ...]

    @property
    def name(self) -> str:
        """The profile's name, as used in a target's `profile:`."""
        return self.spec.name

    @cached_property
    def scalar_oids(self) -> tuple[str, ...]:
        """Sorted OIDs to GET on each poll."""
        oids: set[str] = {r.oid for r in self.spec.info.values() if r.oid is not None}
        for metric in self.metrics:
            oids |= metric.scalar_oids()
        return tuple(sorted(oids, key=oid_key))

    @cached_property
    def column_oids(self) -> tuple[str, ...]:
        """Sorted table column OIDs to walk on each poll."""
        cols: set[str] = set()
        for metric in self.metrics:
            cols |= metric.column_oids()
        return tuple(sorted(cols, key=oid_key))


def oid_key(oid: str) -> tuple[int, ...]:
    """Sort key that orders OIDs numerically, as agents do."""
    return tuple(int(p) for p in oid.split("."))


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{source}: {loc or '(top level)'}: {msg.removeprefix('Value error, ')}")
    return "\n".join(lines)


# Parsers per `protocol:` value of a profile file. Other protocols register here.
PROFILE_MODELS: dict[str, type[BaseModel]] = {"snmp": SnmpProfile}


class ProfileSet:
    """All profiles known to the process, by name, with device matching."""

    def __init__(self, profiles: Mapping[str, Any]) -> None:
        self._all = dict(profiles)

    @property
    def names(self) -> frozenset[str]:
        """Names of every loaded profile."""
        return frozenset(self._all)

    def get(self, name: str) -> Any:
        """Return a profile by name (KeyError if absent)."""
        return self._all[name]

    def of_protocol(self, protocol: str) -> list[Any]:
        """Profiles of one protocol, sorted by name."""
        return [p for _, p in sorted(self._all.items()) if p.spec.protocol == protocol]

    def snmp(self, name: str) -> Profile:
        """Return an SNMP profile by name."""
        profile = self._all[name]
        if not isinstance(profile, Profile):
            raise KeyError(name)
        return profile

    def match_snmp(self, sys_object_id: str, sys_descr: str) -> tuple[list[Profile], list[Profile]]:
        """Candidate profiles for a device: (matched outright best first, to probe in order).

        A sysObjectID prefix match wins (longest first), then a sysDescr pattern. Profiles
        that can only be recognised by their MIB's objects answering come second; the caller
        probes those with a GET of their oid_exists objects.
        """
        by_oid: list[tuple[int, Profile]] = []
        by_descr: list[Profile] = []
        by_presence: list[Profile] = []
        for profile in self.of_protocol("snmp"):
            match = profile.spec.match
            lengths = [
                len(p)
                for p in match.sys_object_id
                if sys_object_id == p or sys_object_id.startswith(p + ".")
            ]
            if lengths:
                by_oid.append((max(lengths), profile))
            elif any(re.search(p, sys_descr) for p in match.sys_descr):
                by_descr.append(profile)
            elif match.oid_exists:
                by_presence.append(profile)
        by_oid.sort(key=lambda item: -item[0])
        return [p for _, p in by_oid] + by_descr, by_presence


def load_profiles(dirs: Iterable[str | Path] = ()) -> ProfileSet:
    """Load the built-in profiles and those in `dirs`; later directories override by name."""
    specs: dict[str, tuple[BaseModel, str]] = {}
    problems: list[str] = []
    for directory in [BUILTIN_PROFILE_DIR, *map(Path, dirs)]:
        if not directory.is_dir():
            problems.append(f"{directory}: profile directory does not exist")
            continue
        for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
            try:
                raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                problems.append(f"{path}: cannot read profile: {exc}")
                continue
            if not isinstance(raw, dict):
                problems.append(f"{path}: a profile must be a mapping")
                continue
            model = PROFILE_MODELS.get(str(raw.get("protocol", "snmp")))
            if model is None:
                problems.append(f"{path}: protocol: unknown protocol {raw.get('protocol')!r}")
                continue
            try:
                spec = model.model_validate(raw)
            except ValidationError as exc:
                problems.append(_format_errors(str(path), exc))
                continue
            specs[spec.name] = (spec, str(path))  # type: ignore[attr-defined]
    profiles: dict[str, Any] = {}
    for name, (spec, source) in specs.items():
        if isinstance(spec, SnmpProfile):
            try:
                metrics = _resolve_includes(name, specs, [])
            except ProfileError as exc:
                problems.append(f"{source}: {exc}")
                continue
            profiles[name] = Profile(spec=spec, source=source, metrics=metrics)
        else:
            profiles[name] = spec
    if problems:
        raise ProfileError("\n".join(problems))
    return ProfileSet(profiles)


def _resolve_includes(
    name: str, specs: Mapping[str, tuple[BaseModel, str]], chain: list[str]
) -> tuple[MetricSpec, ...]:
    if name in chain:
        raise ProfileError(f"include loop: {' -> '.join([*chain, name])}")
    if name not in specs:
        raise ProfileError(f"include: no profile named {name!r}")
    spec = specs[name][0]
    if not isinstance(spec, SnmpProfile):
        raise ProfileError(f"include: {name!r} is not an SNMP profile")
    metrics = list(spec.metrics)
    for included in spec.include:
        metrics.extend(_resolve_includes(included, specs, [*chain, name]))
    return tuple(metrics)
