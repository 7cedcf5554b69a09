"""Merge what several profiles read from one device into one set of readings. Pure.

Real devices speak several MIBs at once (UPS-MIB beside the vendor's UPS MIB and an
environment probe; a PDU beside ENTITY-SENSOR), so every profile that matches applies. The
merge is where the guarantees live:

- supersession: a profile that lists another in `supersedes` (and every non-fallback
  profile, for a generic `fallback` MIB) replaces that profile's readings of each kind
  (quantity, component type, location) it reports itself, so a UPS's charge comes once,
  from the better source;
- one series per identity: when two readings would still be exported with the same metric
  and labels, the first in precedence order is kept and the other counted as `duplicate`;
- physical sanity: a value outside its quantity's range (model.PHYSICAL_RANGE) is a
  decoding error or a filler, omitted and counted as `out_of_range`;
- safe strings: every sensor name, device info field and partial error passes
  poller.text.device_text() here, the one place every protocol's output goes through, so
  no device string that cannot be encoded, printed or shown reaches the store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from poller.model import PHYSICAL_RANGE, DeviceData, DeviceInfo, Reading
from poller.text import MAX_MESSAGE_TEXT, device_text


@dataclass(frozen=True, slots=True)
class Contribution:
    """One applied profile's readings of a poll."""

    profile: str
    fallback: bool
    supersedes: frozenset[str]
    data: DeviceData


def in_range(reading: Reading) -> bool:
    """Whether a reading's value is physically possible for its quantity."""
    bounds = PHYSICAL_RANGE.get(reading.quantity)  # none for states (status, power source)
    return bounds is None or bounds[0] <= reading.value <= bounds[1]


def _superseders(item: Contribution, parts: Sequence[Contribution]) -> list[Contribution]:
    return [
        other
        for other in parts
        if other is not item
        and (item.profile in other.supersedes or (item.fallback and not other.fallback))
    ]


def merge(parts: Sequence[Contribution], protocol: str = "") -> DeviceData:
    """One DeviceData from the contributions of every applied profile, best first."""
    # Kinds each superseding profile reports, computed only for profiles that supersede.
    kinds: dict[str, set[object]] = {}
    dropped: Counter[str] = Counter()
    seen: set[tuple[str, str, str, str, str]] = set()
    readings: list[Reading] = []
    sources: list[tuple[str, int]] = []
    partial: set[str] = set()
    ranges = PHYSICAL_RANGE
    for part in parts:
        replaced: set[object] = set()
        for other in _superseders(part, parts):
            reported = kinds.get(other.profile)
            if reported is None:
                reported = kinds[other.profile] = {
                    r.kind for r in other.data.readings if r.limit_type is None
                }
            replaced |= reported
        kept = 0
        for original in part.data.readings:
            if replaced and original.kind in replaced:
                continue
            clean = device_text(original.sensor)
            # The fast path returns the very same object: no copy of a clean reading.
            reading = original if clean is original.sensor else original._replace(sensor=clean)
            bounds = ranges.get(reading.quantity)  # none for states (status, power source)
            if bounds is not None and not bounds[0] <= reading.value <= bounds[1]:
                dropped["out_of_range"] += 1
                continue
            key = reading.series
            if key in seen:
                dropped["duplicate"] += 1
                continue
            seen.add(key)
            readings.append(reading)
            kept += 1
        sources.append((part.profile, kept))
        partial.update(_messages(part.data.partial_errors))
    return DeviceData(
        info=_safe_info(_info(parts, protocol)),
        readings=tuple(readings),
        partial_errors=tuple(sorted(partial)),
        dropped=tuple(sorted(dropped.items())),
        sources=tuple(sources),
    )


def _info(parts: Sequence[Contribution], protocol: str) -> DeviceInfo:
    """Identity from the first profile that knows each field; profile = the primary one."""

    def first(field: str) -> str:
        for part in parts:
            value = str(getattr(part.data.info, field))
            if value:
                return value
        return ""

    return DeviceInfo(
        vendor=first("vendor"),
        model=first("model"),
        firmware=first("firmware"),
        profile=parts[0].profile if parts else "",
        protocol=protocol,
    )


def _safe_info(info: DeviceInfo) -> DeviceInfo:
    """Device info with every field a safe string (the same object when all already are)."""
    fields = (info.vendor, info.model, info.firmware, info.profile, info.protocol)
    clean = tuple(device_text(f) for f in fields)
    if all(c is f for c, f in zip(clean, fields, strict=True)):
        return info
    return DeviceInfo(*clean)


def _messages(errors: tuple[str, ...]) -> tuple[str, ...]:
    """Partial errors as safe strings: they quote device strings and go to logs and pages."""
    return tuple(device_text(e, MAX_MESSAGE_TEXT) for e in errors)


def checked(data: DeviceData) -> DeviceData:
    """One driver's data with impossible values and repeated series dropped and counted,
    and its strings made safe (poller.text)."""
    dropped: Counter[str] = Counter(dict(data.dropped))
    seen: set[tuple[str, str, str, str, str]] = set()
    kept: list[Reading] = []
    renamed = False
    for original in data.readings:
        clean = device_text(original.sensor)
        reading = original
        if clean is not original.sensor:  # the fast path returns the very same object
            reading = original._replace(sensor=clean)
            renamed = True
        if not in_range(reading):
            dropped["out_of_range"] += 1
        elif reading.series in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(reading.series)
            kept.append(reading)
    info = _safe_info(data.info)
    partial = _messages(data.partial_errors)
    if (
        len(kept) == len(data.readings)
        and not renamed
        and info is data.info
        and partial == data.partial_errors
    ):
        return data
    return DeviceData(
        info=info,
        readings=tuple(kept),
        partial_errors=partial,
        dropped=tuple(sorted(dropped.items())),
        sources=data.sources,
    )
