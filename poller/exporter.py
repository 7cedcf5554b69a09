"""Render the store as Prometheus metric families. Reads the store only: no device I/O."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from poller import __version__
from poller.errors import REASONS
from poller.model import PowerSource, Quantity, Reading, State
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


class _Family:
    """One metric family being built, rejecting duplicate label sets."""

    def __init__(self, name: str, documentation: str, typ: str = "gauge") -> None:
        self.metric = Metric(name, documentation, typ)
        self._seen: set[tuple[tuple[str, str], ...]] = set()

    def add(self, labels: dict[str, str], value: float, suffix: str = "") -> None:
        key = tuple(labels.items())
        if key in self._seen:
            return  # a device listing one sensor twice must not break the whole scrape
        self._seen.add(key)
        self.metric.add_sample(self.metric.name + suffix, labels, value)


def _reading_labels(reading: Reading, base: dict[str, str]) -> dict[str, str]:
    labels = dict(base)
    if reading.quantity not in (Quantity.UPS_LOAD, Quantity.UPS_POWER_SOURCE):
        labels["sensor"] = reading.sensor
    if reading.location is not None:
        labels["location"] = reading.location.value
    if reading.limit_type is not None:
        labels["limit_type"] = reading.limit_type.value
    return labels


class StoreCollector:
    """A prometheus_client collector over the store's latest results."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def describe(self) -> list[Metric]:
        """Nothing to pre-describe: families depend on what devices report."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Build fresh metric families from the current store snapshot."""
        yield from render(self._store.snapshot())


def render(views: list[TargetView]) -> Iterator[Metric]:
    """Metric families for a list of target views, in a stable order."""
    build = _Family("hwpoller_build_info", "hwpoller version.")
    build.add({"version": __version__}, 1.0)
    yield build.metric
    yield from _health(views)
    yield from _devices(views)


def _health(views: list[TargetView]) -> Iterator[Metric]:
    up = _Family("hwpoller_up", "1 if the last poll of the target succeeded.")
    duration = _Family("hwpoller_poll_duration_seconds", "Duration of the last poll.")
    success = _Family(
        "hwpoller_last_success_timestamp_seconds",
        "Unix time of the last successful poll (0 before the first).",
    )
    errors = _Family("hwpoller_poll_errors", "Failed polls by reason.", "counter")
    for view in views:
        base = {"device": view.name, **dict(view.labels), "protocol": view.protocol}
        up.add(base, 1.0 if view.up else 0.0)
        if view.last is not None:
            duration.add(base, view.last.duration_seconds)
        success.add(base, view.last_success_at)
        counts = dict(view.errors)
        for reason in REASONS:
            errors.add({**base, "reason": reason}, float(counts.get(reason, 0)), "_total")
    for family in (up, duration, success, errors):
        yield family.metric


def _devices(views: list[TargetView]) -> Iterator[Metric]:
    info = _Family("hw_device_info", "Identity of a polled device; value 1. " + POLLED)
    sources = _Family(
        "hwpoller_profile_readings",
        "Readings each applied profile contributed to the last successful poll.",
    )
    dropped = _Family(
        "hwpoller_readings_dropped",
        "Readings left out of the last successful poll, by reason: duplicate (a second "
        "source of one series) or out_of_range (physically impossible value).",
    )
    partial = _Family(
        "hwpoller_partial_failures",
        "Parts of the last successful poll that failed, such as a table the device could not "
        "serve; their readings are absent and the log names each.",
    )
    families: dict[str, _Family] = {}

    def family(name: str, documentation: str) -> _Family:
        if name not in families:
            families[name] = _Family(name, documentation + " " + POLLED)
        return families[name]

    for view in views:
        data = view.last.data if view.last is not None and view.last.success else None
        if data is None:
            continue  # unavailable, not stale: a down target keeps only its health series
        base = {"device": view.name, **dict(view.labels)}
        info.add(
            {
                **base,
                "vendor": data.info.vendor,
                "model": data.info.model,
                "firmware": data.info.firmware,
                "profile": data.info.profile,
                "protocol": data.info.protocol or view.protocol,
            },
            1.0,
        )
        for profile, count in data.sources:
            sources.add({**base, "profile": profile}, float(count))
        partial.add(base, float(len(data.partial_errors)))
        counts = dict(data.dropped)
        for reason in DROP_REASONS:
            dropped.add({**base, "reason": reason}, float(counts.get(reason, 0)))
        for reading in data.readings:
            name, limit_name, doc = FAMILIES[reading.quantity]
            labels = _reading_labels(reading, base)
            if reading.limit_type is not None and limit_name is not None:
                family(limit_name, doc + LIMIT_HELP).add(labels, reading.value)
            elif reading.quantity == Quantity.STATUS and reading.hw_type is not None:
                labels["hw_type"] = reading.hw_type.value
                fam = family(name, doc)
                for state in State:
                    fam.add({**labels, "state": state.value}, float(reading.state == state))
            elif reading.quantity == Quantity.UPS_POWER_SOURCE:
                fam = family(name, doc)
                for source in PowerSource:
                    fam.add({**labels, "source": source.value}, float(reading.state == source))
            else:
                family(name, doc).add(labels, reading.value)
    yield info.metric
    yield sources.metric
    yield dropped.metric
    yield partial.metric
    for name in sorted(families):
        yield families[name].metric


def exposition(store: Store) -> bytes:
    """The text exposition of a store, as /metrics serves it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return generate_latest(registry)
