"""Typed access to Redfish JSON, names of parts, and the collector of one chassis' readings.

Every property is read through the typed accessors here, so a service that sends a string
where a number belongs loses that one value rather than the poll. Arrays inside a resource
are read up to MAX_ARRAY entries (collections are capped by the driver).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from poller.model import LOCATED, HwType, LimitType, Location, Quantity, Reading, State
from poller.redfish.profile import LoadedRedfishProfile

JsonObject = Mapping[str, object]

# Status.State values of a component that is not there or not working by design.
GONE_STATES = frozenset(
    {"Absent", "Disabled", "UnavailableOffline", "StandbyOffline", "StandbySpare", "Deferring"}
)
HEALTH = {"OK": State.OK, "Warning": State.DEGRADED, "Critical": State.FAILED}
# Sensor.Thresholds (Redfish 2019.4+) -> limit type; the Fatal ones stand in for a missing
# Critical one.
THRESHOLDS = (
    ("UpperCritical", LimitType.HIGH_CRITICAL),
    ("UpperFatal", LimitType.HIGH_CRITICAL),
    ("UpperCaution", LimitType.HIGH_DEGRADED),
    ("LowerCaution", LimitType.LOW_DEGRADED),
    ("LowerCritical", LimitType.LOW_CRITICAL),
    ("LowerFatal", LimitType.LOW_CRITICAL),
)
# Thermal/Power members (the deprecated resources) name their thresholds flat.
LEGACY_THRESHOLDS = (
    ("UpperThresholdCritical", LimitType.HIGH_CRITICAL),
    ("UpperThresholdFatal", LimitType.HIGH_CRITICAL),
    ("UpperThresholdNonCritical", LimitType.HIGH_DEGRADED),
    ("LowerThresholdNonCritical", LimitType.LOW_DEGRADED),
    ("LowerThresholdCritical", LimitType.LOW_CRITICAL),
    ("LowerThresholdFatal", LimitType.LOW_CRITICAL),
)
# Percent quantities that hwpoller exports as ratios.
PERCENT = frozenset({Quantity.HUMIDITY, Quantity.FAN_SPEED_RATIO})
# Entries read of one array inside a resource (Temperatures[], Fans[], Voltages[],
# TemperatureReadingsCelsius[]): as many as a collection's members (the driver's
# MAX_MEMBERS). A BMC has tens of sensors; one answering 100,000 Temperatures entries put
# 100,001 series into /metrics and cost ~1.8 CPU-s per poll on the event loop.
MAX_ARRAY = 512


def text(obj: object, key: str) -> str:
    """A string property, or "" when it is missing or not a string."""
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, str) else ""


def number(obj: object, key: str) -> float | None:
    """A finite numeric property, or None (null, missing, a string, a bool, NaN)."""
    value = obj.get(key) if isinstance(obj, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        result = float(value)
    except OverflowError:  # valid JSON, e.g. a 401-digit integer: no float holds it
        return None
    return result if math.isfinite(result) else None


def first_number(obj: object, keys: Sequence[str]) -> float | None:
    """The first of several properties that holds a number (schema versions renamed them)."""
    for key in keys:
        value = number(obj, key)
        if value is not None:
            return value
    return None


def child(obj: object, key: str) -> JsonObject | None:
    """An object property, or None."""
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, Mapping) else None


def children(obj: object, key: str, notes: list[str] | None = None) -> list[JsonObject]:
    """The objects of an array property (anything else in it is ignored), at most MAX_ARRAY
    of them; when the array is longer, `notes` is told so."""
    value = obj.get(key) if isinstance(obj, Mapping) else None
    if not isinstance(value, list):
        return []
    if len(value) > MAX_ARRAY:
        if notes is not None:
            notes.append(f"{key}: {len(value)} entries, only the first {MAX_ARRAY} read")
        value = value[:MAX_ARRAY]
    return [v for v in value if isinstance(v, Mapping)]


def link(obj: object, key: str) -> str:
    """The @odata.id of a navigation property, or ""."""
    return text(child(obj, key), "@odata.id")


def present(obj: object) -> bool:
    """False for a component that is absent, disabled or offline."""
    return text(child(obj, "Status"), "State") not in GONE_STATES


def health(obj: object) -> State | None:
    """Status.Health as a State, or None when the service does not say."""
    return HEALTH.get(text(child(obj, "Status"), "Health"))


def last_segment(path: str) -> str:
    """The last segment of a resource path ("/a/b/IntakeTemp" -> "IntakeTemp")."""
    return path.rstrip("/").rpartition("/")[2]


def resource_name(obj: object, fallback: str = "") -> str:
    """What the BMC calls a part: its Name (FanName in Thermal 1.0), else its Id or
    MemberId (array members: a bare index), else the fallback. Names are what the
    operator sees on the BMC's own page and the chassis label; Ids are often internal
    ("0.1.3", "iDRAC.Embedded.1#SystemBoardInletTemp")."""
    for key in ("Name", "FanName", "Id", "MemberId"):
        found = text(obj, key).strip()
        if found:
            return found
    return fallback


def part_key(obj: object) -> str:
    """What tells one part from another of the same Name: its service label on the
    chassis ("PSU 2"), else its Id or MemberId."""
    place = child(child(obj, "Location"), "PartLocation")
    for found in (text(place, "ServiceLabel"), text(obj, "Id"), text(obj, "MemberId")):
        if found.strip():
            return found.strip()
    return ""


def unique_names(names: Sequence[str], keys: Sequence[str]) -> list[str]:
    """Names made unique within one collection, in order. A Name that several members
    share is one series per member, not one for all (HPE iLO names every power supply
    "HpeServerPowerSupply"): each gets its key after it ("HpeServerPowerSupply 1"), or
    its ordinal among them when the keys do not tell them apart either."""
    counts = Counter(names)
    if len(counts) == len(names):
        return list(names)  # the usual case: nothing repeats
    out = list(names)
    for name, count in counts.items():
        if count < 2:
            continue
        places = [i for i, n in enumerate(names) if n == name]
        found = [keys[i] for i in places]
        distinct = all(found) and len(set(found)) == len(found)
        for ordinal, i in enumerate(places, 1):
            out[i] = f"{name} {found[ordinal - 1] if distinct else ordinal}"
    taken = Counter(out)
    if len(taken) < len(out):  # a suffixed name met another member's own Name
        out = [f"{n} ({i})" if taken[n] > 1 else n for i, n in enumerate(out, 1)]
    return out


def named_members(
    resource: JsonObject, key: str, kind: str, out: Out
) -> list[tuple[str, JsonObject]]:
    """The present members of an array of a deprecated resource (Thermal, Power), each
    with its unique name. Names are made over all members, absent ones too, so that a
    supply pulled from its bay does not rename the one left."""
    members = children(resource, key, out.notes)
    names = unique_names(
        [resource_name(m, f"{kind} {i}") for i, m in enumerate(members)],
        [part_key(m) for m in members],
    )
    return [(n, m) for n, m in zip(names, members, strict=True) if present(m)]


def thresholds(sensor: object) -> dict[LimitType, float]:
    """A Sensor's Thresholds as limits (the first of Critical/Fatal that is set wins)."""
    out: dict[LimitType, float] = {}
    found = child(sensor, "Thresholds")
    for key, limit_type in THRESHOLDS:
        value = number(child(found, key), "Reading")
        if value is not None and limit_type not in out:
            out[limit_type] = value
    return out


def legacy_thresholds(member: object) -> dict[LimitType, float]:
    """A Thermal/Power member's flat thresholds as limits."""
    out: dict[LimitType, float] = {}
    for key, limit_type in LEGACY_THRESHOLDS:
        value = number(member, key)
        if value is not None and limit_type not in out:
            out[limit_type] = value
    return out


class Out:
    """Readings of one chassis, with the profile that places them."""

    def __init__(self, profile: LoadedRedfishProfile) -> None:
        self.profile = profile
        self.readings: list[Reading] = []
        self.notes: list[str] = []  # what was left out (arrays cut at MAX_ARRAY)
        # (quantity, sensor) of every value given so far: one part described by two
        # resources (a Sensor and a deprecated Thermal entry of the same Name) is one.
        self.named: set[tuple[Quantity, str]] = set()
        # Temperatures given so far, as (location, value): what a summary would repeat.
        self.temperatures: list[tuple[Location | None, float]] = []

    def value(
        self,
        quantity: Quantity,
        name: str,
        value: float | None,
        limits: Mapping[LimitType, float],
        names: Sequence[str],
        context: str,
    ) -> bool:
        """A value and its limits, located when the quantity is; False when there is no
        value (or one was given already under this name)."""
        if value is None or (quantity, name) in self.named:
            return False
        self.named.add((quantity, name))
        # Percent / 100 rather than * 0.01: 35 % is 0.35, not 0.35000000000000003.
        scale = 100.0 if quantity in PERCENT else 1.0
        location = self.profile.locate(names, context) if quantity in LOCATED else None
        self.readings.append(Reading(quantity, name, value / scale, location=location))
        if quantity == Quantity.TEMPERATURE:
            self.temperatures.append((location, value))
        for limit_type, limit in sorted(limits.items()):
            self.readings.append(
                Reading(quantity, name, limit / scale, location=location, limit_type=limit_type)
            )
        return True

    def status(self, name: str, state: State | None, hw_type: HwType) -> None:
        """A hw_status reading, when the service states the component's health."""
        if state is not None:
            self.readings.append(Reading(Quantity.STATUS, name, state=state.value, hw_type=hw_type))
