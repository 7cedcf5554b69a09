"""The event loop hwpoller runs on: uvloop's (libuv, written in C) by default, asyncio's
own with `--event-loop asyncio`.

Per SNMP poll most of the event loop's work is its own bookkeeping (callbacks, timers, the
selector), which uvloop does in C: about 15 % less CPU per poll on the side-by-side bench
(docs/scale.md). Everything hwpoller uses of the loop (datagram sockets by add_reader,
timers, signal handlers, threads, subprocess pipes) behaves the same on both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
EVENT_LOOPS = ("uvloop", "asyncio")
DEFAULT = "uvloop"


def factory(event_loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for asyncio.Runner (None: asyncio's default loop)."""
    if event_loop not in EVENT_LOOPS:
        raise ValueError(f"event loop {event_loop!r} is not one of {', '.join(EVENT_LOOPS)}")
    if event_loop == "asyncio":
        return None
    import uvloop  # noqa: PLC0415 - only when chosen

    new: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return new


def run(main: Coroutine[Any, Any, T], event_loop: str = DEFAULT) -> T:
    """Run a coroutine to its end on a new loop of the chosen kind, as asyncio.run does."""
    with asyncio.Runner(loop_factory=factory(event_loop)) as runner:
        return runner.run(main)
