"""Device profiles as data: load mibs/*.yaml into Profile objects and match devices to them.

A profile says which OIDs to GET and which table columns to walk, and how each value
becomes a normalised Reading (see docs/profiles.md for the format, poller.profile_spec for
its models). Evaluating a profile against fetched values is pure: no I/O happens here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from poller.errors import ProfileError
from poller.ipmi_profiles import IpmiProfile
from poller.profile_spec import (
    Condition,
    Fallback,
    LocationRule,
    MatchSpec,
    MetricSpec,
    RawValue,
    Ref,
    SnmpProfile,
)

__all__ = [
    "BUILTIN_PROFILE_DIR",
    "PROFILE_MODELS",
    "SYS_DESCR",
    "SYS_OBJECT_ID",
    "Condition",
    "Fallback",
    "LocationRule",
    "MatchSpec",
    "MetricSpec",
    "Profile",
    "ProfileSet",
    "RawValue",
    "Ref",
    "SnmpProfile",
    "load_profiles",
    "oid_key",
]


def _builtin_profile_dir() -> Path:
    """mibs/ at the top of a source checkout, or poller/mibs/ where a wheel installs it."""
    here = Path(__file__).resolve().parent
    source = here.parent / "mibs"
    return source if (source / "rfc1628-ups.yaml").exists() else here / "mibs"


BUILTIN_PROFILE_DIR = _builtin_profile_dir()
SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"


@dataclass(frozen=True)
class Profile:
    """A loaded profile with its includes resolved."""

    spec: SnmpProfile
    source: str
    metrics: tuple[MetricSpec, ...]
    # Every profile this one includes, directly or through nested includes.
    included: frozenset[str] = frozenset()

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
PROFILE_MODELS: dict[str, type[BaseModel]] = {"snmp": SnmpProfile, "ipmi": IpmiProfile}


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

    def snmp_candidates(self, sys_object_id: str, sys_descr: str) -> list[Profile]:
        """Standalone SNMP profiles whose identity test holds, in precedence order.

        The order decides which of two sources of one series wins: a longer sysObjectID
        prefix first, then a sysDescr match, then profiles recognised only by their MIB's
        objects, generic (`fallback`) MIBs last, by name within each rank. Those with a
        presence test (oid_exists, subtree) are still to be probed by the caller.
        """
        ranked: list[tuple[tuple[int, int, str], Profile]] = []
        for profile in self.of_protocol("snmp"):
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
            included = frozenset(_include_closure(name, specs)) - {name}
            missing = [n for n in spec.supersedes if n not in specs]
            if missing:
                problems.append(f"{source}: supersedes: no profile named {missing[0]!r}")
                continue
            profiles[name] = Profile(spec=spec, source=source, metrics=metrics, included=included)
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


def _include_closure(name: str, specs: Mapping[str, tuple[BaseModel, str]]) -> set[str]:
    """The profile and everything it includes (already checked for loops and gaps)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        spec = specs[current][0]
        if isinstance(spec, SnmpProfile):
            todo.extend(spec.include)
    return seen
