"""Redfish profiles as data: how a service is recognised, where its sensors sit, what to skip.

Redfish already says what each sensor measures (ReadingType, ReadingUnits), holds the
thresholds and often the place (PhysicalContext), so a profile is small: the manufacturer
and model it applies to, rules that place sensors (by PhysicalContext and/or name) and the
resource paths not worth reading (OEM chassis, storage enclosures). Pure: no I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from poller.model import Location
from poller.profiles import LoadedBase


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _check_regex(pattern: str | None) -> None:
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None


class RedfishMatch(_Strict):
    """How a service is recognised without an explicit `profile:`.

    `manufacturer` is searched (case-insensitively) in the Chassis Manufacturer and the
    service root's Vendor, `model` in the Chassis Model and the service root's Product; when
    both are given, both must match.
    """

    manufacturer: str | None = None
    model: str | None = None
    # Used for any service no other profile matches (the generic profile).
    fallback: bool = False

    @model_validator(mode="after")
    def _shape(self) -> RedfishMatch:
        _check_regex(self.manufacturer)
        _check_regex(self.model)
        return self

    def matches(self, manufacturers: Sequence[str], models: Sequence[str]) -> bool:
        """True when the service's identity strings satisfy this match (never for fallback
        alone: that is decided after every other profile failed)."""
        if self.manufacturer is None and self.model is None:
            return False
        if self.manufacturer is not None and not any(
            re.search(self.manufacturer, m, re.IGNORECASE) for m in manufacturers
        ):
            return False
        return self.model is None or any(re.search(self.model, m, re.IGNORECASE) for m in models)


class RedfishLocationRule(_Strict):
    """Place a temperature, humidity or leak sensor by its PhysicalContext and/or its name.

    Rules are tried in order (the profile's own, then those of its includes) and the first
    that matches wins; `name` is a regular expression searched case-insensitively in the
    sensor's Id and Name, `physical_context` a list of Redfish PhysicalContext values. When
    both are given, both must match; `physical_context: [""]` matches a sensor without one.
    """

    name: str | None = None
    physical_context: list[str] = Field(default_factory=list)
    location: Location = Field(strict=False)

    @model_validator(mode="after")
    def _shape(self) -> RedfishLocationRule:
        if self.name is None and not self.physical_context:
            raise ValueError(
                "a location rule needs name (a regular expression) or physical_context"
            )
        _check_regex(self.name)
        return self

    @cached_property
    def _regex(self) -> re.Pattern[str] | None:
        return re.compile(self.name, re.IGNORECASE) if self.name is not None else None

    def matches(self, names: Sequence[str], context: str) -> bool:
        """True when the rule applies to a sensor with these names and PhysicalContext."""
        if self.physical_context and context not in self.physical_context:
            return False
        regex = self._regex
        return regex is None or any(regex.search(n) for n in names)


class RedfishProfile(_Strict):
    """A profile for services polled over Redfish (mibs/redfish-*.yaml)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    protocol: Literal["redfish"]
    description: str = ""
    # Shown as hw_device_info's vendor; empty: the Chassis Manufacturer (or root Vendor).
    vendor: str = ""
    match: RedfishMatch = Field(default_factory=RedfishMatch)
    # Profiles whose rules and skips apply after this one's (usually redfish-generic).
    include: list[str] = Field(default_factory=list)
    locations: list[RedfishLocationRule] = Field(default_factory=list)
    # Regular expressions searched in a resource's path (@odata.id): matching chassis,
    # collections and members are never read (OEM resources, storage enclosures).
    skip: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _skips(self) -> RedfishProfile:
        for pattern in self.skip:
            _check_regex(pattern)
        return self


@dataclass(frozen=True)
class LoadedRedfishProfile(LoadedBase):
    """A Redfish profile with the rules and skips of its includes appended (depth first)."""

    spec: RedfishProfile
    source: str
    included: frozenset[str]
    rules: tuple[RedfishLocationRule, ...]
    skips: tuple[re.Pattern[str], ...]

    def skipped(self, path: str) -> bool:
        """True when a resource at this path is not to be read."""
        return any(p.search(path) for p in self.skips)

    def locate(self, names: Sequence[str], context: str) -> Location:
        """Where a sensor sits: the first matching rule, else `other`."""
        for rule in self.rules:
            if rule.matches(names, context):
                return rule.location
        return Location.OTHER


def compile_profile(
    spec: BaseModel, source: str, included: Sequence[BaseModel]
) -> LoadedRedfishProfile:
    """The loaded profile: its rules and skips, then those of everything it includes."""
    if not isinstance(spec, RedfishProfile):  # pragma: no cover - the registry routes by model
        raise TypeError("not a Redfish profile")
    others = [p for p in included if isinstance(p, RedfishProfile)]
    rules = [*spec.locations]
    skips = [*spec.skip]
    for other in others:
        rules.extend(other.locations)
        skips.extend(s for s in other.skip if s not in skips)
    return LoadedRedfishProfile(
        spec=spec,
        source=source,
        included=frozenset(p.name for p in others),
        rules=tuple(rules),
        skips=tuple(re.compile(s) for s in skips),
    )


def describe_match(spec: BaseModel) -> list[str]:
    """How a profile is recognised, for `hwpoller profiles`."""
    if not isinstance(spec, RedfishProfile):
        return []
    how = []
    if spec.match.manufacturer is not None:
        how.append(f"manufacturer ~ /{spec.match.manufacturer}/")
    if spec.match.model is not None:
        how.append(f"model ~ /{spec.match.model}/")
    if spec.match.fallback:
        how.append("any Redfish service no other profile matches")
    return how


def match_redfish(
    profiles: Sequence[LoadedRedfishProfile],
    manufacturers: Sequence[str],
    models: Sequence[str],
) -> LoadedRedfishProfile | None:
    """The first profile (by name) whose match holds, else the fallback profile, else None."""
    for profile in profiles:
        if profile.spec.match.matches(manufacturers, models):
            return profile
    for profile in profiles:
        if profile.spec.match.fallback:
            return profile
    return None
