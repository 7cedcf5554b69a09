"""Closed-loop measurement shared by the benchmarks: every runner polls back to back."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from poller.scheduler import TargetRunner


@dataclass
class Measured:
    """What the measured window (after warm-up) saw."""

    ok: int = 0
    failed: int = 0
    cpu: float = 0.0  # CPU seconds of this process
    wall: float = 0.0
    durations: list[float] = field(default_factory=list)  # wall time of each poll

    @property
    def polls(self) -> int:
        """Polls finished in the window."""
        return self.ok + self.failed


async def measure(
    runners: list[TargetRunner],
    seconds: float,
    warmup: float,
    on_start: Callable[[], None] | None = None,
) -> Measured:
    """Poll every runner back to back through TargetRunner.poll_once (the scheduler's path);
    count what finishes after `warmup` (logins, detection, SDR reads) for `seconds`.
    `on_start` runs when the measured window opens (to reset other counters)."""
    out = Measured()
    measuring = asyncio.Event()
    stop_at = time.monotonic() + warmup + seconds

    async def loop(runner: TargetRunner) -> None:
        while time.monotonic() < stop_at:
            result = await runner.poll_once()
            if measuring.is_set():
                if result.success:
                    out.ok += 1
                else:
                    out.failed += 1
                out.durations.append(result.duration_seconds)

    tasks = [asyncio.create_task(loop(r)) for r in runners]
    await asyncio.sleep(warmup)
    measuring.set()
    if on_start is not None:
        on_start()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    await asyncio.gather(*tasks)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    out.wall = time.monotonic() - t0
    out.cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return out
