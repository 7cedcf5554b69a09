"""The scan of `hwpoller discover`: every probe (address x protocol x port) once, at a
bounded rate, within a deadline, with at most MAX_PENDING probes waiting at once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from poller.discover.probes import Endpoint, Found, Probe

log = logging.getLogger("hwpoller.discover")

# Probes in flight at once, whatever the rate and timeout: bounds memory and (Redfish) fds.
MAX_PENDING = 1024


class RateLimiter:
    """Spaces calls at least 1/rate seconds apart; no catching up in bursts after a lag."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    async def wait(self) -> None:
        """Return when the next probe may be sent."""
        now = self._clock()
        # Behind schedule (a slow loop, a full pending window): start from now rather than
        # sending the missed slots at once.
        slot = now if self._next is None or self._next < now else self._next
        self._next = slot + self._interval
        if slot > now:
            await self._sleep(slot - now)


@dataclass
class ScanResult:
    """What a scan found, and how much of it was done."""

    found: list[Found]
    total: int  # probes the ranges and ports make
    sent: int  # probes sent (fewer than total when --max-time ran out)

    @property
    def complete(self) -> bool:
        """Whether every probe was sent."""
        return self.sent == self.total


# done, total, found so far
Progress = Callable[[int, int, int], None]


class Scanner:
    """Sends every probe (address x protocol x port) once, at most `rate` per second."""

    def __init__(
        self,
        probes: Sequence[Probe],
        rate: float,
        timeout: float,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._probes = tuple(probes)
        self._limiter = RateLimiter(rate, clock, sleep)
        self._timeout = timeout
        self._progress = progress
        self._clock = clock
        self._max_pending = max_pending

    def _jobs(self, addresses: Iterable[str]) -> Iterator[tuple[Probe, str, int]]:
        for host in addresses:
            for probe in self._probes:
                for port in probe.ports:
                    yield probe, host, port

    async def run(self, addresses: Iterable[str], count: int, deadline: float) -> ScanResult:
        """Probe `count` addresses; stop sending at `deadline` (on the scanner's clock)."""
        total = count * sum(len(p.ports) for p in self._probes)
        found: list[Found] = []
        pending: set[asyncio.Task[Found | None]] = set()
        slots = asyncio.Semaphore(self._max_pending)
        state = {"sent": 0, "done": 0}

        def finished(task: asyncio.Task[Found | None]) -> None:
            pending.discard(task)
            slots.release()
            state["done"] += 1
            if not task.cancelled():
                error = task.exception()
                if error is not None:
                    log.debug("probe failed unexpectedly: %r", error)
                elif (result := task.result()) is not None:
                    found.append(result)
            if self._progress is not None:
                self._progress(state["done"], total, len(found))

        try:
            for probe in self._probes:
                await probe.open()
            for probe, host, port in self._jobs(addresses):
                await self._limiter.wait()
                if self._clock() >= deadline:
                    break
                await slots.acquire()
                task = asyncio.ensure_future(probe.probe(host, port, self._timeout))
                pending.add(task)
                task.add_done_callback(finished)
                state["sent"] += 1
            if pending:
                # The last answers may take the probe timeout, but not past the deadline.
                remaining = max(0.0, min(self._timeout + 0.1, deadline - self._clock()))
                await asyncio.wait(set(pending), timeout=remaining)
        finally:
            for task in list(pending):
                task.cancel()
            if pending:
                await asyncio.wait(set(pending))
            for probe in self._probes:
                await probe.close()
        order = {p.protocol: i for i, p in enumerate(self._probes)}
        found.sort(key=lambda f: _sort_key(f.endpoint, order))
        return ScanResult(found, total, state["sent"])


def _sort_key(endpoint: Endpoint, order: Mapping[str, int]) -> tuple[tuple[int, ...], int, int]:
    """By address (numerically: 10.0.0.9 before 10.0.0.10), protocol as given, port."""
    address = tuple(int(part) for part in endpoint.host.split(".") if part.isdigit())
    return address, order.get(endpoint.protocol, len(order)), endpoint.port
