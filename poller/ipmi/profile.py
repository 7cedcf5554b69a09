"""IPMI profiles as data: how a BMC is recognised and where its temperature sensors sit.

A BMC's sensor data repository (SDR) already says what each sensor measures, in which unit,
and holds the thresholds, so an IPMI profile is small: the manufacturer ids it applies to and
rules that place temperature sensors (inlet, exhaust, cpu, ...) by name and entity id.
Evaluating the rules is pure: no I/O happens here.
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


class IpmiMatch(_Strict):
    """How a BMC is recognised without an explicit `profile:`."""

    # IANA enterprise numbers as reported by Get Device ID.
    manufacturer_id: list[int] = Field(default_factory=list)
    # Used for any BMC no other profile matches (the generic profile).
    fallback: bool = False


class IpmiLocationRule(_Strict):
    """Place a temperature sensor when its name matches and/or its entity id is listed.

    Rules are tried in order and the first that matches wins; `name` is a regular expression
    searched case-insensitively, `entity` a list of IPMI entity ids (0x37 is air inlet).
    When both are given, both must match.
    """

    name: str | None = None
    entity: list[int] = Field(default_factory=list)
    location: Location = Field(strict=False)

    @model_validator(mode="after")
    def _shape(self) -> IpmiLocationRule:
        if self.name is None and not self.entity:
            raise ValueError("a location rule needs name (a regular expression) or entity")
        if self.name is not None:
            try:
                re.compile(self.name)
            except re.error as exc:
                raise ValueError(f"bad regular expression {self.name!r}: {exc}") from None
        if any(not 0 <= e <= 0xFF for e in self.entity):
            raise ValueError("entity ids are 0..255")
        return self

    @cached_property
    def _regex(self) -> re.Pattern[str] | None:
        return re.compile(self.name, re.IGNORECASE) if self.name is not None else None

    def matches(self, sensor: str, entity: int) -> bool:
        """True when the rule applies to a sensor with this name and entity id."""
        if self.entity and entity not in self.entity:
            return False
        return self._regex is None or self._regex.search(sensor) is not None


class IpmiProfile(_Strict):
    """A profile for BMCs polled over IPMI (mibs/ipmi-*.yaml)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    protocol: Literal["ipmi"]
    description: str = ""
    # Shown as hw_device_info's vendor; the generic profile names vendors by id instead.
    vendor: str = ""
    vendors: dict[int, str] = Field(default_factory=dict, strict=False)
    match: IpmiMatch = Field(default_factory=IpmiMatch)
    # Profiles whose rules apply after this one's (usually ipmi-generic).
    include: list[str] = Field(default_factory=list)
    locations: list[IpmiLocationRule] = Field(default_factory=list)

    def vendor_for(self, manufacturer_id: int) -> str:
        """The vendor name to show for a BMC with this manufacturer id."""
        return self.vendor or self.vendors.get(manufacturer_id, "")


def locate(rules: Sequence[IpmiLocationRule], sensor: str, entity: int) -> Location:
    """Where a temperature sensor sits: the first matching rule, else `other`."""
    for rule in rules:
        if rule.matches(sensor, entity):
            return rule.location
    return Location.OTHER


@dataclass(frozen=True)
class LoadedIpmiProfile(LoadedBase):
    """An IPMI profile with the location rules of its includes appended (depth first)."""

    spec: IpmiProfile
    source: str
    included: frozenset[str]
    rules: tuple[IpmiLocationRule, ...]

    def vendor_for(self, manufacturer_id: int) -> str:
        """The vendor name to show for a BMC with this manufacturer id."""
        return self.spec.vendor_for(manufacturer_id)


def compile_profile(
    spec: BaseModel, source: str, included: Sequence[BaseModel]
) -> LoadedIpmiProfile:
    """The loaded profile: its location rules, then those of everything it includes."""
    if not isinstance(spec, IpmiProfile):  # pragma: no cover - the registry routes by model
        raise TypeError("not an IPMI profile")
    others = [p for p in included if isinstance(p, IpmiProfile)]
    rules = [*spec.locations]
    for other in others:
        rules.extend(other.locations)
    return LoadedIpmiProfile(
        spec=spec,
        source=source,
        included=frozenset(p.name for p in others),
        rules=tuple(rules),
    )


def describe_match(spec: BaseModel) -> list[str]:
    """How a profile is recognised, for `hwpoller profiles`."""
    if not isinstance(spec, IpmiProfile):
        return []
    how = []
    if spec.match.manufacturer_id:
        how.append(f"manufacturer {', '.join(map(str, spec.match.manufacturer_id))}")
    if spec.match.fallback:
        how.append("any BMC no other profile matches")
    return how


def match_ipmi(
    profiles: Sequence[LoadedIpmiProfile], manufacturer_id: int
) -> LoadedIpmiProfile | None:
    """The profile for a BMC's manufacturer id, else the fallback profile, else None."""
    for profile in profiles:
        if manufacturer_id in profile.spec.match.manufacturer_id:
            return profile
    for profile in profiles:
        if profile.spec.match.fallback:
            return profile
    return None
