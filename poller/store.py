"""Latest poll result and health bookkeeping per target, replaced atomically."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from poller.errors import REASONS
from poller.model import PollResult

SensorLabels = tuple[tuple[re.Pattern[str], tuple[tuple[str, str], ...]], ...]


@dataclass(frozen=True, slots=True)
class TargetView:
    """Everything the exporter shows about one target; never mutated after creation."""

    name: str
    protocol: str
    labels: tuple[tuple[str, str], ...]
    last: PollResult | None = None
    last_success_at: float = 0.0  # epoch seconds, 0 until the first success
    errors: tuple[tuple[str, int], ...] = tuple((r, 0) for r in REASONS)
    # (sensor name pattern, labels replacing the target's for that sensor's series)
    sensor_labels: SensorLabels = ()

    @property
    def up(self) -> bool:
        """True when the last poll succeeded."""
        return self.last is not None and self.last.success


class ViewListener(Protocol):
    """Told of every new view of a target (the exporter renders it then, not at scrape)."""

    def refresh(self, view: TargetView) -> None:
        """A target's view changed."""
        ...


class Store:
    """Holds one TargetView per configured target. Written by the scheduler, read at scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: dict[str, TargetView] = {}
        # The exporter's rendered text per target (poller.exporter owns what is in it); each
        # recorded poll is passed to it, so it renders then and not at the next scrape.
        self.exposition_cache: ViewListener | None = None

    def register(
        self,
        name: str,
        protocol: str,
        labels: Mapping[str, str],
        sensor_labels: SensorLabels = (),
    ) -> None:
        """Add a target (or update its labels), keeping its history when it already exists."""
        items = tuple(sorted(labels.items()))
        with self._lock:
            old = self._targets.get(name)
            if old is not None and old.protocol == protocol:
                self._targets[name] = replace(old, labels=items, sensor_labels=sensor_labels)
            else:
                self._targets[name] = TargetView(name, protocol, items, sensor_labels=sensor_labels)

    def retain(self, names: set[str]) -> None:
        """Forget targets that are no longer configured."""
        with self._lock:
            self._targets = {n: v for n, v in self._targets.items() if n in names}

    def record(self, result: PollResult) -> None:
        """Store a poll result, replacing the target's previous one."""
        with self._lock:
            old = self._targets.get(result.target)
            if old is None:
                return  # the target was removed while its last poll ran
            errors = old.errors
            if not result.success:
                reason = result.reason if result.reason in REASONS else "internal"
                errors = tuple((r, n + 1 if r == reason else n) for r, n in errors)
            new = self._targets[result.target] = TargetView(
                old.name,
                old.protocol,
                old.labels,
                result,
                result.finished_at if result.success else old.last_success_at,
                errors,
                old.sensor_labels,
            )
        listener = self.exposition_cache
        if listener is not None:
            listener.refresh(new)

    def snapshot(self) -> list[TargetView]:
        """All targets sorted by name; safe to use from any thread."""
        with self._lock:
            views = list(self._targets.values())
        return sorted(views, key=lambda v: v.name)

    def get(self, name: str) -> TargetView | None:
        """One target's view, if configured."""
        with self._lock:
            return self._targets.get(name)
