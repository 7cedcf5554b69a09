"""Render the store as Prometheus exposition. Reads the store only: no device I/O.

Each target's samples are rendered to text once per poll (lazily, at the first scrape that
sees the new result) and kept beside the store, so a scrape is a join of ready-made
fragments: it costs the same however often Prometheus scrapes, and a 100,000-sample scrape
takes milliseconds instead of seconds. The text is exactly what prometheus_client's
text format 0.0.4 writer produces (the golden files check it); StoreCollector offers the
same samples as prometheus_client Metric families for embedding in another registry.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from poller import __version__
from poller.errors import REASONS
from poller.model import (
    DeviceData,
    HwType,
    LimitType,
    Location,
    PowerSource,
    Quantity,
    Reading,
    State,
)
from poller.store import Store, TargetView

POLLED = "Polled in the background; see hwpoller_last_success_timestamp_seconds for freshness."

# quantity -> (metric name, limit metric name or None, help)
FAMILIES: dict[Quantity, tuple[str, str | None, str]] = {
    Quantity.TEMPERATURE: (
        "hw_temperature_celsius",
        "hw_temperature_limit_celsius",
        "Temperature in degrees Celsius.",
    ),
    Quantity.HUMIDITY: (
        "hw_humidity_ratio",
        "hw_humidity_limit_ratio",
        "Relative humidity as a ratio (0..1).",
    ),
    Quantity.LEAK: ("hw_leak_detected", None, "Water leak: 1 water detected, 0 dry."),
    Quantity.FAN_SPEED: ("hw_fan_speed_rpm", "hw_fan_speed_limit_rpm", "Fan speed in RPM."),
    Quantity.FAN_SPEED_RATIO: (
        "hw_fan_speed_ratio",
        None,
        "Fan speed as a ratio of its maximum (0..1), for devices that report percent.",
    ),
    Quantity.STATUS: (
        "hw_status",
        None,
        "Component health as a StateSet: 1 for the current state (ok, degraded, failed).",
    ),
    Quantity.BATTERY_CHARGE: (
        "hw_battery_charge_ratio",
        None,
        "Battery charge remaining as a ratio (0..1).",
    ),
    Quantity.BATTERY_TIME_LEFT: (
        "hw_battery_time_left_seconds",
        None,
        "Estimated battery runtime left in seconds.",
    ),
    Quantity.UPS_POWER_SOURCE: (
        "hw_ups_power_source",
        None,
        "What feeds the UPS output, as a StateSet: 1 for the current source.",
    ),
    Quantity.UPS_LOAD: ("hw_ups_load_ratio", None, "UPS output load as a ratio of capacity."),
    Quantity.VOLTAGE: ("hw_voltage_volts", None, "Voltage in volts."),
    Quantity.POWER: ("hw_power_watts", None, "Power in watts."),
}
# Why a reading can be left out of a poll (see poller.compose); always exported, 0 or more.
DROP_REASONS = ("duplicate", "out_of_range")
LIMIT_HELP = " The device's own threshold, by limit_type."


# The families every scrape carries, in order, with (HELP, TYPE). Reading families follow,
# sorted by name, when at least one target has such a reading.
HEALTH: tuple[tuple[str, str, str], ...] = (
    ("hwpoller_up", "1 if the last poll of the target succeeded.", "gauge"),
    ("hwpoller_poll_duration_seconds", "Duration of the last poll.", "gauge"),
    (
        "hwpoller_last_success_timestamp_seconds",
        "Unix time of the last successful poll (0 before the first).",
        "gauge",
    ),
    ("hwpoller_poll_errors_total", "Failed polls by reason.", "counter"),
    ("hw_device_info", "Identity of a polled device; value 1. " + POLLED, "gauge"),
    (
        "hwpoller_profile_readings",
        "Readings each applied profile contributed to the last successful poll.",
        "gauge",
    ),
    (
        "hwpoller_readings_dropped",
        "Readings left out of the last successful poll, by reason: duplicate (a second "
        "source of one series) or out_of_range (physically impossible value).",
        "gauge",
    ),
    (
        "hwpoller_partial_failures",
        "Parts of the last successful poll that failed, such as a table the device could not "
        "serve; their readings are absent and the log names each.",
        "gauge",
    ),
)
_HEALTH_NAMES = frozenset(name for name, _, _ in HEALTH)
# Reading family name -> HELP text.
_READING_HELP: dict[str, str] = {}
for _name, _limit, _doc in FAMILIES.values():
    _READING_HELP[_name] = _doc + " " + POLLED
    if _limit is not None:
        _READING_HELP[_limit] = _doc + LIMIT_HELP + " " + POLLED

Sample = tuple[dict[str, str], float]
# prometheus_client's own number formatting (Go-style: 1.7e+09, +Inf), so the text matches.
_format: Callable[[float], str] = floatToGoString
# Numbers as _format writes them: readings, limits and counts repeat from poll to poll and
# across targets. Zero, NaN and infinities are not kept (0.0 and -0.0: one key, two texts).
_NUMBERS: dict[float, str] = {}
_NUMBERS_MAX = 1 << 16


def _number(value: float) -> str:
    got = _NUMBERS.get(value)
    if got is not None:
        return got
    got = _format(value)
    if value and math.isfinite(value):
        if len(_NUMBERS) >= _NUMBERS_MAX:
            _NUMBERS.clear()
        _NUMBERS[value] = got
    return got


def _escape(value: str) -> str:
    if "\\" not in value and "\n" not in value and '"' not in value:
        return value
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _line(name: str, labels: dict[str, str], value: float) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}} {_format(value)}\n"


def _render(samples: dict[str, list[Sample]]) -> dict[str, str]:
    """One target's sample lines per family. Label pairs and numbers repeat a lot within a
    target (its device/site/room labels, a sensor's value, limits and states), so each is
    escaped or formatted once."""
    pairs: dict[tuple[str, str], str] = {}
    numbers: dict[float, str] = {}
    out: dict[str, str] = {}
    for name, entries in samples.items():
        lines = []
        for labels, value in entries:
            rendered = []
            for key in sorted(labels):
                item = (key, labels[key])
                pair = pairs.get(item)
                if pair is None:
                    pair = pairs[item] = f'{key}="{_escape(item[1])}"'
                rendered.append(pair)
            number = numbers.get(value)
            if number is None:
                number = numbers[value] = _format(value)
            lines.append(f"{name}{{{','.join(rendered)}}} {number}\n")
        out[name] = "".join(lines)
    return out


class _Samples:
    """One target's samples by family, rejecting a repeated label set within a family."""

    def __init__(self) -> None:
        self.families: dict[str, list[Sample]] = {}
        self._seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()

    def add(self, name: str, labels: dict[str, str], value: float) -> None:
        key = (name, tuple(labels.items()))
        if key in self._seen:
            return  # a device listing one sensor twice must not break the whole scrape
        self._seen.add(key)
        self.families.setdefault(name, []).append((labels, value))


def _reading_labels(reading: Reading, base: dict[str, str]) -> dict[str, str]:
    labels = dict(base)
    if reading.quantity not in (Quantity.UPS_LOAD, Quantity.UPS_POWER_SOURCE):
        labels["sensor"] = reading.sensor
    if reading.location is not None:
        labels["location"] = reading.location.value
    if reading.limit_type is not None:
        labels["limit_type"] = reading.limit_type.value
    return labels


def _sensor_base(view: TargetView, sensor: str, base: dict[str, str]) -> dict[str, str]:
    """The target's labels with the first matching sensor_labels rule's applied."""
    for pattern, labels in view.sensor_labels:
        if pattern.search(sensor):
            return {**base, **dict(labels)}
    return base


def _info_labels(view: TargetView, data: DeviceData) -> dict[str, str]:
    """hw_device_info's own labels."""
    return {
        "vendor": data.info.vendor,
        "model": data.info.model,
        "firmware": data.info.firmware,
        "profile": data.info.profile,
        "protocol": data.info.protocol or view.protocol,
    }


def target_samples(view: TargetView, readings: bool = True) -> dict[str, list[Sample]]:
    """Every sample one target contributes, by family name (`readings=False`: only the
    poller's own families and hw_device_info, not the device's readings)."""
    out = _Samples()
    base = {"device": view.name, **dict(view.labels), "protocol": view.protocol}
    # Not polled yet is not down: hwpoller_up appears with the first poll's outcome, so a
    # restart does not put every device's "unreachable" alert into pending.
    if view.last is not None:
        out.add("hwpoller_up", base, 1.0 if view.up else 0.0)
        out.add("hwpoller_poll_duration_seconds", base, view.last.duration_seconds)
    out.add("hwpoller_last_success_timestamp_seconds", base, view.last_success_at)
    counts = dict(view.errors)
    for reason in REASONS:
        out.add("hwpoller_poll_errors_total", {**base, "reason": reason}, counts.get(reason, 0))
    data = view.last.data if view.last is not None and view.last.success else None
    if data is None:
        return out.families  # unavailable, not stale: a down target keeps only its health
    base = {"device": view.name, **dict(view.labels)}
    out.add("hw_device_info", {**base, **_info_labels(view, data)}, 1.0)
    for profile, count in data.sources:
        out.add("hwpoller_profile_readings", {**base, "profile": profile}, float(count))
    dropped = dict(data.dropped)
    for reason in DROP_REASONS:
        out.add("hwpoller_readings_dropped", {**base, "reason": reason}, dropped.get(reason, 0))
    out.add("hwpoller_partial_failures", base, float(len(data.partial_errors)))
    if not readings:
        return out.families
    per_sensor: dict[str, dict[str, str]] = {}
    for reading in data.readings:
        name, limit_name, _ = FAMILIES[reading.quantity]
        sensor_base = base
        if view.sensor_labels:
            sensor_base = per_sensor.get(reading.sensor) or per_sensor.setdefault(
                reading.sensor, _sensor_base(view, reading.sensor, base)
            )
        labels = _reading_labels(reading, sensor_base)
        if reading.limit_type is not None and limit_name is not None:
            out.add(limit_name, labels, reading.value)
        elif reading.quantity == Quantity.STATUS and reading.hw_type is not None:
            labels["hw_type"] = reading.hw_type.value
            for state in State:
                out.add(name, {**labels, "state": state.value}, float(reading.state == state))
        elif reading.quantity == Quantity.UPS_POWER_SOURCE:
            for source in PowerSource:
                out.add(name, {**labels, "source": source.value}, float(reading.state == source))
        else:
            out.add(name, labels, reading.value)
    return out.families


# What a reading's lines depend on besides its value and state: its series identity and
# sensor name. Readings with equal keys render to the same label sets.
_ReadingKey = tuple[Quantity, str, Location | None, LimitType | None, HwType | None]
# One exported line of a reading without its number: family, 'name{labels} ', and for
# StateSet-style families the state this line is 1 for (None: the reading's own value).
_Prefix = tuple[str, str, str | None]


class _TargetText:
    """One target's rendered text and the label prefixes it was made of.

    A poll changes values, rarely label sets: each reading's lines ('name{labels} ') are
    built once per target and label configuration and then reused, so that rendering a
    poll is a dict lookup and a number format per line.
    """

    def __init__(self, view: TargetView) -> None:
        self.view = view
        self.labels_key = (view.name, view.protocol, view.labels, view.sensor_labels)
        # Family name -> this target's lines, encoded once (a scrape joins bytes).
        self.text: dict[str, bytes] = {}
        self.prefixes: dict[_ReadingKey, tuple[_Prefix, ...]] = {}
        # A StateSet reading's whole text by (key, state): (family, its prefixes, lines).
        self.states: dict[tuple[_ReadingKey, str], tuple[str, tuple[str, ...], str]] = {}
        # The poller's own families' prefixes by (family, what tells its lines apart).
        self.health: dict[tuple[object, ...], str] = {}
        # The readings these lines show, and their lines per family (str, and encoded):
        # a device whose readings are last poll's, the same DeviceData object (the SNMP
        # driver returns it when the answers did not change), reuses them as they are.
        self.data: DeviceData | None = None
        self.readings: dict[str, str] = {}
        self.encoded: dict[str, bytes] = {}
        # The health families drawn from those readings' DeviceData (hw_device_info, drops,
        # profile counts, partial failures), as _health_text made them.
        self.data_health: dict[str, str] = {}

    def state_lines(
        self, key: _ReadingKey, reading: Reading, base: Callable[[], dict[str, str]]
    ) -> tuple[str, tuple[str, ...], str] | None:
        """The lines of a reading whose every line is a state's 1 or 0 (hw_status,
        hw_ups_power_source), which depend on its state alone; None for other readings."""
        state = reading.state
        if state is None:
            return None
        got = self.states.get((key, state))
        if got is None:
            found = self.prefixes.get(key) or self.reading_prefixes(reading, base())
            if any(match is None for _, _, match in found):
                return None
            if len(self.states) >= _PREFIXES_MAX:
                self.states.clear()
            text = "".join(
                prefix + ("1.0\n" if state == match else "0.0\n") for _, prefix, match in found
            )
            got = self.states[(key, state)] = (found[0][0], tuple(p for _, p, _ in found), text)
        return got

    def reading_prefixes(self, reading: Reading, base: dict[str, str]) -> tuple[_Prefix, ...]:
        key = (
            reading.quantity,
            reading.sensor,
            reading.location,
            reading.limit_type,
            reading.hw_type,
        )
        found = self.prefixes.get(key)
        if found is not None:
            return found
        if len(self.prefixes) >= _PREFIXES_MAX:  # sensor names that keep changing
            self.prefixes.clear()
        view = self.view
        name, limit_name, _ = FAMILIES[reading.quantity]
        sensor_base = _sensor_base(view, reading.sensor, base) if view.sensor_labels else base
        labels = _reading_labels(reading, sensor_base)
        out: list[_Prefix]
        if reading.limit_type is not None and limit_name is not None:
            out = [(limit_name, _prefix(limit_name, labels), None)]
        elif reading.quantity == Quantity.STATUS and reading.hw_type is not None:
            labels["hw_type"] = reading.hw_type.value
            out = [
                (name, _prefix(name, {**labels, "state": state.value}), state.value)
                for state in State
            ]
        elif reading.quantity == Quantity.UPS_POWER_SOURCE:
            out = [
                (name, _prefix(name, {**labels, "source": source.value}), source.value)
                for source in PowerSource
            ]
        else:
            out = [(name, _prefix(name, labels), None)]
        found = self.prefixes[key] = tuple(out)
        return found


# Label prefixes (and state lines) kept per target at most: a device whose sensor names
# change every poll must not grow them without end.
_PREFIXES_MAX = 1 << 16
# 'key="escaped value"' by (key, value): site, room, rack, protocol and limit labels repeat
# across thousands of targets. Cleared when it grows past _PAIRS_MAX (label churn).
_PAIRS: dict[tuple[str, str], str] = {}
_PAIRS_MAX = 200_000


def _prefix(name: str, labels: dict[str, str]) -> str:
    parts = []
    for key in sorted(labels):
        item = (key, labels[key])
        pair = _PAIRS.get(item)
        if pair is None:
            if len(_PAIRS) >= _PAIRS_MAX:
                _PAIRS.clear()
            pair = _PAIRS[item] = f'{key}="{_escape(item[1])}"'
        parts.append(pair)
    return f"{name}{{{','.join(parts)}}} "


def _render_view(view: TargetView, previous: _TargetText | None) -> _TargetText:
    """A target's text, reusing the label prefixes of its previous rendering when its labels
    did not change. The same lines as _render(target_samples(view)), faster."""
    labels_key = (view.name, view.protocol, view.labels, view.sensor_labels)
    if previous is not None and previous.labels_key == labels_key:
        rendered = _TargetText.__new__(_TargetText)
        rendered.view, rendered.labels_key = view, labels_key
        rendered.prefixes, rendered.text = previous.prefixes, {}
        rendered.states, rendered.health = previous.states, previous.health
        rendered.data = rendered_data = previous.data
        rendered.readings, rendered.encoded = previous.readings, previous.encoded
        rendered.data_health = previous.data_health
    else:
        rendered = _TargetText(view)
        rendered_data = None
    data = view.last.data if view.last is not None and view.last.success else None
    if data is not None and data is rendered_data:
        # Readings unchanged (same object, same labels): only the poll's own lines (up,
        # duration, last success, errors) are new; the lines of the data are as they were.
        text = _health_text(view, rendered.health, rendered.data_health)
        rendered.text = _joined(text, rendered.readings, rendered.encoded)
        return rendered
    rendered.data, rendered.readings, rendered.encoded = data, {}, {}
    rendered.data_health = {}
    text = _health_text(view, rendered.health, None, rendered.data_health)
    if data is not None:
        base: dict[str, str] = {}

        def labels() -> dict[str, str]:
            if not base:
                base.update({"device": view.name, **dict(view.labels)})
            return base

        prefixes = rendered.prefixes
        lines: dict[str, list[str]] = {}
        seen: set[str] = set()
        for reading in data.readings:
            quantity, sensor, value, location, limit_type, state, hw_type = reading
            key = (quantity, sensor, location, limit_type, hw_type)
            if state is not None:
                whole = rendered.state_lines(key, reading, labels)
                if whole is not None:
                    family, names, text_ = whole
                    if seen.isdisjoint(names):
                        seen.update(names)
                        lines.setdefault(family, []).append(text_)
                        continue
            found = prefixes.get(key)
            if found is None:
                found = rendered.reading_prefixes(reading, labels())
            for family, prefix, match in found:
                if prefix in seen:
                    continue  # a device listing one sensor twice must not break the scrape
                seen.add(prefix)
                number = _number(value) if match is None else "1.0" if state == match else "0.0"
                lines.setdefault(family, []).append(prefix + number + "\n")
        readings, encoded = rendered.readings, rendered.encoded
        for family, entries in lines.items():
            joined = readings[family] = "".join(entries)
            encoded[family] = joined.encode()
    rendered.text = _joined(text, rendered.readings, rendered.encoded)
    return rendered


def _joined(
    health: dict[str, str], readings: dict[str, str], encoded: dict[str, bytes]
) -> dict[str, bytes]:
    """A target's encoded lines per family: the health families first, then the readings'
    (a family in both gets the health lines, then the readings')."""
    out = {family: lines.encode() for family, lines in health.items()}
    for family, lines in readings.items():
        out[family] = (health[family] + lines).encode() if family in health else encoded[family]
    return out


def _health_text(
    view: TargetView,
    cache: dict[tuple[object, ...], str],
    known: dict[str, str] | None = None,
    made: dict[str, str] | None = None,
) -> dict[str, str]:
    """The same lines as _render(target_samples(view, readings=False)): the poller's own
    families and hw_device_info. Each line's 'name{labels} ' is built once per target, and
    families whose values rarely change (error counts, drops, profile counts) are kept whole
    by what they show. `known`: the lines drawn from the view's DeviceData, as an earlier
    call for that very DeviceData (and labels) put them in `made`."""
    if len(cache) > 512:  # info labels or counts that keep changing: start again
        cache.clear()
    out: dict[str, str] = {}
    proto: dict[str, str] | None = None

    def with_protocol() -> dict[str, str]:
        nonlocal proto
        if proto is None:
            proto = {"device": view.name, **dict(view.labels), "protocol": view.protocol}
        return proto

    def prefix(name: str, key: object, extra: dict[str, str], protocol: bool = True) -> str:
        found = cache.get((name, key))
        if found is None:
            base = with_protocol() if protocol else {"device": view.name, **dict(view.labels)}
            found = cache[(name, key)] = _prefix(name, {**base, **extra})
        return found

    last = view.last
    if last is not None:
        up = 1.0 if view.up else 0.0
        out["hwpoller_up"] = prefix("hwpoller_up", None, {}) + _number(up) + "\n"
        name = "hwpoller_poll_duration_seconds"
        out[name] = prefix(name, None, {}) + _number(last.duration_seconds) + "\n"
    name = "hwpoller_last_success_timestamp_seconds"
    out[name] = prefix(name, None, {}) + _number(view.last_success_at) + "\n"
    name = "hwpoller_poll_errors_total"
    key: tuple[object, ...] = ("family", name, view.errors)
    text = cache.get(key)
    if text is None:
        counts = dict(view.errors)
        text = cache[key] = "".join(
            prefix(name, reason, {"reason": reason}) + _number(counts.get(reason, 0)) + "\n"
            for reason in REASONS
        )
    out[name] = text
    data = last.data if last is not None and last.success else None
    if data is None:
        return out
    if known is None:
        known = _data_health(view, data, cache, prefix)
        if made is not None:
            made.update(known)
    out.update(known)
    return out


def _data_health(
    view: TargetView,
    data: DeviceData,
    cache: dict[tuple[object, ...], str],
    prefix: Callable[..., str],
) -> dict[str, str]:
    """The health families drawn from a successful poll's DeviceData, in exposition order."""
    out: dict[str, str] = {}
    key: tuple[object, ...]
    info = _info_labels(view, data)
    name = "hw_device_info"
    out[name] = prefix(name, tuple(info.values()), info, protocol=False) + "1.0\n"
    name = "hwpoller_profile_readings"
    if data.sources:
        key = ("family", name, data.sources)
        text = cache.get(key)
        if text is None:
            text = cache[key] = "".join(
                prefix(name, profile, {"profile": profile}, protocol=False)
                + _number(float(n))
                + "\n"
                for profile, n in data.sources
            )
        out[name] = text
    name = "hwpoller_readings_dropped"
    key = ("family", name, data.dropped)
    text = cache.get(key)
    if text is None:
        dropped = dict(data.dropped)
        text = cache[key] = "".join(
            prefix(name, reason, {"reason": reason}, protocol=False)
            + _number(dropped.get(reason, 0))
            + "\n"
            for reason in DROP_REASONS
        )
    out[name] = text
    name = "hwpoller_partial_failures"
    out[name] = (
        prefix(name, None, {}, protocol=False) + _number(float(len(data.partial_errors))) + "\n"
    )
    return out


class _TextCache:
    """Rendered text per target, valid while the store holds the same TargetView."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, _TargetText] = {}

    def refresh(self, view: TargetView) -> None:
        """Render a target's new view now, in the poll that made it, so that a scrape only
        joins text (store.record calls this once the exporter is attached)."""
        with self._lock:
            previous = self._by_name.get(view.name)
        rendered = _render_view(view, previous)
        with self._lock:
            self._by_name[view.name] = rendered

    def fragments(self, views: list[TargetView]) -> list[dict[str, bytes]]:
        with self._lock:
            cached = dict(self._by_name)
        out = []
        fresh: dict[str, _TargetText] = {}
        for view in views:
            hit = cached.get(view.name)
            if hit is None or hit.view is not view:
                hit = _render_view(view, hit)
            fresh[view.name] = hit
            out.append(hit.text)
        with self._lock:
            self._by_name = fresh  # removed targets drop out with the next scrape
        return out


def _cache_for(store: Store) -> _TextCache:
    cache = store.exposition_cache
    if not isinstance(cache, _TextCache):
        cache = _TextCache()
        store.exposition_cache = cache
    return cache


def _header(name: str, documentation: str, typ: str) -> str:
    doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {typ}\n"


@functools.cache
def _header_bytes(name: str, documentation: str, typ: str) -> bytes:
    """A family's HELP and TYPE lines, encoded (families are a fixed set)."""
    return _header(name, documentation, typ).encode()


def attach(store: Store) -> None:
    """Render each target's text when its poll is recorded rather than at the next scrape:
    a scrape of 100,000 samples then costs about the same whatever was polled since."""
    _cache_for(store)


def exposition(store: Store, extra: Iterable[Collector] = ()) -> bytes:
    """The text exposition of a store (plus any extra collectors), as /metrics serves it."""
    fragments = _cache_for(store).fragments(store.snapshot())
    # Joined as bytes, once: the page of a big site is tens of MB, and every extra copy of it
    # (str, then its encoding) would be that much more peak memory per scrape.
    parts = [_header_bytes("hwpoller_build_info", "hwpoller version.", "gauge")]
    parts.append(_line("hwpoller_build_info", {"version": __version__}, 1.0).encode())
    for name, documentation, typ in HEALTH:
        parts.append(_header_bytes(name, documentation, typ))
        parts.extend(f.get(name, b"") for f in fragments)
    readings = sorted({n for f in fragments for n in f if n not in _HEALTH_NAMES})
    for name in readings:
        parts.append(_header_bytes(name, _READING_HELP[name], "gauge"))
        parts.extend(f.get(name, b"") for f in fragments)
    extra = list(extra)
    if extra:
        registry = CollectorRegistry(auto_describe=False)
        for collector in extra:
            registry.register(collector)
        parts.append(generate_latest(registry))
    return b"".join(parts)


class StoreCollector:
    """The same samples as prometheus_client Metric families, for use in another registry."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def describe(self) -> list[Metric]:
        """Nothing to pre-describe: families depend on what devices report."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Build fresh metric families from the current store snapshot."""
        yield from render(self._store.snapshot())


def render(views: list[TargetView]) -> Iterator[Metric]:
    """Metric families for a list of target views, in the exposition's order."""
    build = Metric("hwpoller_build_info", "hwpoller version.", "gauge")
    build.add_sample("hwpoller_build_info", {"version": __version__}, 1.0)
    yield build
    per_target = [target_samples(v) for v in views]
    names = [n for n, _, _ in HEALTH]
    names += sorted({n for t in per_target for n in t if n not in _HEALTH_NAMES})
    docs = {n: (d, t) for n, d, t in HEALTH}
    for name in names:
        documentation, typ = docs.get(name, (_READING_HELP.get(name, ""), "gauge"))
        family = name.removesuffix("_total") if typ == "counter" else name
        metric = Metric(family, documentation, typ)
        for samples in per_target:
            for labels, value in samples.get(name, ()):
                metric.add_sample(name, labels, value)
        yield metric
