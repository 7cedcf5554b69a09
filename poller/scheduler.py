"""One asyncio task per target: interval, jitter, outer deadline, backoff, one poll in flight."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from poller import protocols
from poller.config import Config, Target
from poller.driver import Driver, DriverContext, PollSpec, driver_for
from poller.errors import DeviceError, DeviceTimeoutError
from poller.model import DeviceData, PollResult
from poller.profiles import ProfileSet
from poller.store import Store
from poller.text import MAX_MESSAGE_TEXT, device_text

log = logging.getLogger("hwpoller.scheduler")

# The first poll of each target is spread over this many seconds (or the interval, if
# shorter) so that a restart does not hit every device at the same instant.
START_SPREAD = 10.0
# ... or longer with many targets: at most this many first polls per second, so that a
# restart with thousands of targets does not start them all within those seconds (their
# polls would miss their deadlines, back off together and come back together).
START_RATE = 200.0
# Backoff delays are spread by at least this fraction either way, so that targets which
# failed together (a switch rebooted) do not all come back in the same second.
BACKOFF_JITTER = 0.25
# How long shutdown waits for drivers to close their sessions.
CLOSE_TIMEOUT = 3.0
# How long a poll that missed its deadline gets to honour its cancellation before it is
# left behind (still counted as in flight, so no second poll starts beside it).
CANCEL_GRACE = 0.5
# At most one extra poll (poll_soon, e.g. on an SNMP notification) per target this often.
EXTRA_POLL_GAP = 2.0
# Exceptions that mean "the process is ending": never turned into a poll result.
_FATAL = (KeyboardInterrupt, SystemExit)

DriverMaker = Callable[[PollSpec, DriverContext], Driver]


def _being_cancelled() -> bool:
    """True when the current task has a cancellation request pending (a real shutdown or
    removal), as opposed to a CancelledError that leaked out of some library call."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _consume(task: asyncio.Task[Any]) -> None:
    """Retrieve a finished task's exception so asyncio never logs "Task exception was never
    retrieved": whoever awaited it has already reported it (or has given up on it)."""
    if not task.cancelled():
        task.exception()


def _release(waiter: asyncio.Future[None], _: object = None) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _settle(task: asyncio.Task[Any], seconds: float) -> None:
    """Wait until `task` is done or `seconds` have passed, whichever is first (what
    asyncio.wait([task], timeout=...) does, with one future and one timer per call)."""
    if task.done():
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    wake = functools.partial(_release, waiter)
    task.add_done_callback(wake)
    timer = loop.call_later(seconds, _release, waiter)
    try:
        await waiter
    finally:
        timer.cancel()
        task.remove_done_callback(wake)


def backoff_delay(interval: float, failures: int, max_backoff: float) -> float:
    """Delay before the next poll after `failures` consecutive failures (0 = healthy)."""
    if failures <= 0:
        return interval
    return float(max(interval, min(interval * 2.0 ** (failures - 1), max_backoff)))


class TargetRunner:
    """Polls one target forever; owns its driver and its up/down log state."""

    def __init__(
        self,
        spec: PollSpec,
        labels: dict[str, str],
        driver: Driver,
        store: Store,
        jitter: float,
        max_backoff: float,
    ) -> None:
        self.spec = spec
        self.labels = labels
        self.driver = driver
        self._store = store
        self._jitter = jitter
        self._max_backoff = max_backoff
        self._failures = 0
        self._was_up: bool | None = None
        self._partial: tuple[str, ...] = ()
        self._logged_internal = False
        self._down_reason = ""
        self._inflight: asyncio.Task[DeviceData] | None = None
        self.stopping = False
        # Set by poll_soon(): ends the run loop's sleep early.
        self._wake = asyncio.Event()
        self._last_extra: float | None = None
        # When the next poll is due (monotonic), None before the run loop has planned one;
        # a runner that replaces this one on reload keeps it (inherit).
        self.next_due: float | None = None

    def retune(self, jitter: float, max_backoff: float) -> None:
        """Take new jitter and backoff settings without restarting."""
        self._jitter = jitter
        self._max_backoff = max_backoff

    def inherit(self, previous: TargetRunner) -> None:
        """Continue the up/down bookkeeping of the runner this one replaces."""
        self._failures = previous._failures
        self._was_up = previous._was_up
        self._partial = previous._partial
        self._down_reason = previous._down_reason
        self._logged_internal = previous._logged_internal
        self._last_extra = previous._last_extra

    def inherited_delay(self, previous: TargetRunner) -> float | None:
        """Seconds until the poll the replaced runner had planned (0 if it is due or was in
        flight), so that frequent reloads do not push polling back; None when the interval
        changed (the old plan means nothing then) or no poll was planned yet."""
        if previous.next_due is None or previous.spec.interval != self.spec.interval:
            return None
        return max(0.0, previous.next_due - time.monotonic())

    @property
    def failures(self) -> int:
        """Consecutive failed polls (0 while the target is healthy)."""
        return self._failures

    def next_delay(self) -> float:
        """Seconds from the start of one poll to the next: interval or backoff, jittered."""
        delay = backoff_delay(self.spec.interval, self._failures, self._max_backoff)
        if not self._failures or not self._jitter:
            return delay * (1 + random.uniform(-self._jitter, self._jitter))
        # Backing off: a wider spread, but never sooner than a healthy poll could come (a
        # failing device may be a fragile one).
        spread = max(self._jitter, BACKOFF_JITTER)
        floor = self.spec.interval * (1 - self._jitter)
        return max(floor, delay * (1 + random.uniform(-spread, spread)))

    async def run(self, first_delay: float | None = None, spread: float = START_SPREAD) -> None:
        """Poll on schedule until stopped. Nothing a driver (or this module) raises ends the
        loop, short of cancellation by the scheduler and KeyboardInterrupt/SystemExit."""
        if first_delay is None:
            first_delay = random.uniform(0, min(self.spec.interval, spread))
        self.next_due = time.monotonic() + first_delay
        await self._sleep_until(self.next_due)
        while not self.stopping:
            started = time.monotonic()
            # While a poll runs, it is the one due: a runner replaced now polls at once.
            self.next_due = started
            try:
                await self.poll_once()
            except _FATAL:
                raise
            except asyncio.CancelledError:
                if self.stopping or _being_cancelled():
                    raise
                self.record_internal("a poll was cancelled from outside the scheduler")
            except BaseException:  # noqa: BLE001 - a bug in bookkeeping must not end polling
                self.record_internal("unexpected error after a poll", exc_info=True)
            self.next_due = started + self.next_delay()
            await self._sleep_until(self.next_due)

    def poll_soon(self) -> bool:
        """Poll now instead of at the next scheduled time (the device sent a notification);
        the poll in flight, if any, finishes first. At most one such extra poll per
        EXTRA_POLL_GAP seconds: False when this request was dropped for that reason."""
        now = time.monotonic()
        if self.stopping or (
            self._last_extra is not None and now - self._last_extra < EXTRA_POLL_GAP
        ):
            return False
        self._last_extra = now
        self._wake.set()
        return True

    async def _sleep_until(self, deadline: float) -> None:
        """Sleep until the monotonic deadline, or less when poll_soon() is called."""
        delay = deadline - time.monotonic()
        if delay > 0 and not self._wake.is_set():
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(0)  # always give the other targets a turn
        self._wake.clear()

    async def _poll_driver(self) -> DeviceData:
        """The driver's poll in a task of its own, under the outer deadline.

        A separate task, waited for (_settle) rather than put under asyncio.timeout, because a
        driver (or the library under it) that swallows the deadline's cancellation must not
        be able to hold this loop: after CANCEL_GRACE it is left running, remembered, and
        the next poll reports a timeout until it has ended.
        """
        if self._inflight is not None and not self._inflight.done():
            raise DeviceTimeoutError("the previous poll ignored its deadline and still runs")
        task = asyncio.create_task(self.driver.poll(), name=f"driver:{self.spec.name}")
        task.add_done_callback(_consume)
        self._inflight = task
        try:
            await _settle(task, self.spec.timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        timed_out = not task.done()
        if timed_out:
            task.cancel()
            await _settle(task, CANCEL_GRACE)
        if task.done():
            # Only a poll still running is remembered. A finished task holds its exception,
            # whose traceback holds this frame and so this runner: keeping it would make a
            # reference cycle that keeps the driver's old session (and its socket) open
            # until the cyclic garbage collector happens to run.
            self._inflight = None
        try:
            if timed_out:
                raise TimeoutError
            return task.result()
        finally:
            del task  # same cycle through this frame's local

    async def poll_once(self) -> PollResult:
        """One poll under the outer deadline; the result goes to the store."""
        started = time.monotonic()
        data: DeviceData | None = None
        reason = message = ""
        try:
            data = await self._poll_driver()
        except TimeoutError:
            reason, message = "timeout", f"poll did not finish within {self.spec.timeout:.3g}s"
        except DeviceError as exc:
            # A driver's message may quote what the device said: made safe like its other
            # strings (one line, encodable, bounded) before the log, store and page see it.
            reason, message = exc.reason, device_text(str(exc), MAX_MESSAGE_TEXT)
        except _FATAL:
            raise
        except asyncio.CancelledError:
            if self.stopping or _being_cancelled():
                raise
            # The driver's own task was cancelled by someone else (a library cancelling
            # what it should not): a bug, not a shutdown.
            reason, message = "internal", "internal error (see log)"
            self._log_internal("the driver's poll was cancelled from outside", exc_info=False)
        except BaseException:  # noqa: BLE001 - no exception class may end the target's polling
            # BaseException, not Exception: pyo3's PanicException (a Rust panic inside a
            # library) and other non-Exception classes must not kill the task either.
            reason, message = "internal", "internal error (see log)"
            self._log_internal("unexpected error while polling", exc_info=True)
        result = PollResult(
            target=self.spec.name,
            protocol=self.spec.protocol,
            success=data is not None,
            duration_seconds=time.monotonic() - started,
            finished_at=time.time(),
            data=data,
            reason=reason,
            message=message,
            labels=self.labels,
        )
        self._store.record(result)
        self._log_transition(result)
        return result

    def _log_internal(self, what: str, exc_info: bool) -> None:
        """Log an unexpected error of this target once (with its traceback), not per poll."""
        if not self._logged_internal:
            log.error("target %s: %s", self.spec.name, what, exc_info=exc_info)
            self._logged_internal = True

    def record_internal(self, what: str, exc_info: Any = False) -> None:
        """Count an unexpected failure outside the driver as a failed poll, reason internal."""
        self._log_internal(what, exc_info=exc_info)
        self._failures += 1
        try:
            self._store.record(
                PollResult(
                    target=self.spec.name,
                    protocol=self.spec.protocol,
                    success=False,
                    duration_seconds=0.0,
                    finished_at=time.time(),
                    data=None,
                    reason="internal",
                    message="internal error (see log)",
                    labels=self.labels,
                )
            )
        except Exception:  # noqa: BLE001 - the store itself failing is logged above at most
            log.debug("target %s: could not record an internal error", self.spec.name)

    def _log_transition(self, result: PollResult) -> None:
        if result.success:
            self._failures = 0
            if self._was_up is False:
                log.info("target %s is up again", self.spec.name)
            self._was_up = True
            partial = result.data.partial_errors if result.data else ()
            if partial != self._partial and partial:
                log.warning("target %s: partial result: %s", self.spec.name, "; ".join(partial))
            self._partial = partial
            return
        self._failures += 1
        if self._was_up is not False:
            log.warning("target %s is down: %s: %s", self.spec.name, result.reason, result.message)
        elif result.reason != self._down_reason:
            # Still down, for another reason (a password changed, a cable was plugged in):
            # worth one line, unlike every failed poll.
            log.warning(
                "target %s is still down, now %s: %s", self.spec.name, result.reason, result.message
            )
        self._was_up = False
        self._down_reason = result.reason


class Scheduler:
    """Runs a TargetRunner per configured target; supports reload and graceful stop."""

    def __init__(
        self,
        config: Config,
        profiles: ProfileSet,
        store: Store,
        make_driver: DriverMaker = driver_for,
    ) -> None:
        self._store = store
        self._make_driver = make_driver
        self._runners: dict[str, TargetRunner] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._config = config
        self.context = DriverContext(profiles, config.settings)

    @property
    def runners(self) -> dict[str, TargetRunner]:
        """The running target runners by target name."""
        return dict(self._runners)

    def runner(self, name: str) -> TargetRunner | None:
        """The running runner of one target, None when no such target is polled."""
        return self._runners.get(name)

    def _runner(self, config: Config, target: Target) -> TargetRunner:
        spec = PollSpec.from_config(config, target)
        return TargetRunner(
            spec,
            dict(target.labels),
            self._make_driver(spec, self.context),
            self._store,
            config.settings.jitter,
            config.settings.max_backoff,
        )

    async def start(self) -> None:
        """Register every target in the store and start polling."""
        await self.apply(self._config)

    async def apply(self, config: Config, profiles: ProfileSet | None = None) -> int:
        """Bring the running targets in line with a (new) config and return how many runners
        were (re)started. A target keeps its runner, and so its session (a BMC login), unless
        what it polls changed: its own resolved settings, its protocol's profiles or its
        protocol's shared settings (a concurrency cap). Labels, jitter and backoff change in
        place. Replaced runners keep their up/down state, so a reload does not log every
        down target again, and their next poll's due time unless their interval changed."""
        old = self._config
        changed: set[str] = set()  # protocols whose runners all restart
        if profiles is not None:
            before = self.context.profiles
            changed |= {
                p for p in protocols.names() if profiles.fingerprint(p) != before.fingerprint(p)
            }
            self.context.profiles = profiles
        for record in protocols.protocols():
            keys = record.settings_fields
            if any(old.settings.protocol_key(k) != config.settings.protocol_key(k) for k in keys):
                changed.add(record.name)
        self.context.settings = config.settings
        self._config = config
        wanted = {t.name: t for t in config.targets}
        carried: dict[str, TargetRunner] = {}
        for name in list(self._runners):
            target = wanted.get(name)
            runner = self._runners[name]
            if (
                target is not None
                and target.protocol not in changed
                and PollSpec.from_config(config, target) == runner.spec
            ):
                runner.labels = dict(target.labels)
                runner.retune(config.settings.jitter, config.settings.max_backoff)
                continue
            carried[name] = runner
            await self._stop_target(name)
        # Only now that their runners are stopped (and their sessions closed with the old
        # resource): the next driver of the protocol makes a new one from the new settings.
        for name in changed:
            if protocols.get(name).resource is not None:
                self.context.drop_resource(name)
        self._store.retain(set(wanted))
        new = sum(1 for name in wanted if name not in self._runners)
        spread = max(START_SPREAD, new / START_RATE)
        started = 0
        for name, target in wanted.items():
            # Labels and sensor_labels may have changed for a kept runner too.
            self._store.register(name, target.protocol, target.labels, target.sensor_label_rules())
            if name in self._runners:
                continue
            runner = self._runner(config, target)
            first_delay = None
            if name in carried:
                runner.inherit(carried[name])
                # A restarted runner keeps its place in the schedule: reloads that come
                # every few seconds (config management) must not starve its polls.
                first_delay = runner.inherited_delay(carried[name])
            self._runners[name] = runner
            self._start_task(name, runner, first_delay=first_delay, spread=spread)
            started += 1
        return started

    def _start_task(
        self,
        name: str,
        runner: TargetRunner,
        first_delay: float | None = None,
        spread: float = START_SPREAD,
    ) -> None:
        task = asyncio.create_task(runner.run(first_delay, spread), name=f"poll:{name}")
        task.add_done_callback(lambda t: self._task_ended(name, runner, t))
        self._tasks[name] = task

    def _task_ended(self, name: str, runner: TargetRunner, task: asyncio.Task[None]) -> None:
        """A poll task ends only when its target is stopped. If it ended any other way (a
        bug, or someone else cancelled it), say so once and start polling it again, after
        its backoff."""
        error = None if task.cancelled() else task.exception()  # also marks it retrieved
        if runner.stopping or self._runners.get(name) is not runner:
            return
        if isinstance(error, KeyboardInterrupt | SystemExit):
            return  # the process is ending; asyncio re-raises it from the loop
        if error is None:
            runner.record_internal("its poll task was cancelled from outside; restarted")
        else:
            runner.record_internal(
                "its poll task died; restarted", exc_info=(type(error), error, error.__traceback__)
            )
        self._start_task(name, runner, first_delay=runner.next_delay())

    async def _stop_target(self, name: str) -> None:
        runner = self._runners.pop(name)
        task = self._tasks.pop(name)
        runner.stopping = True
        # Python 3.11's asyncio.wait_for (inside the SNMP library) can swallow a cancellation
        # that races with a reply; the task then sleeps on as if nothing happened. Cancel
        # until it is really gone, but not forever: a task that keeps refusing is left
        # behind (its flag ends its loop at the latest) so that a reload or shutdown always
        # finishes.
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while not task.done() and time.monotonic() < deadline:
            task.cancel()
            await asyncio.wait([task], timeout=0.5)
        if not task.done():
            log.debug("target %s: poll task ignores cancellation; left behind", name)
        # The close runs in a task of its own: one that swallows cancellation cannot hold a
        # reload or the shutdown either.
        closing = asyncio.create_task(runner.driver.close(), name=f"close:{name}")
        closing.add_done_callback(_consume)
        done, _ = await asyncio.wait([closing], timeout=CLOSE_TIMEOUT)
        if not done:
            closing.cancel()
            log.debug("target %s: session close did not finish in %ss", name, CLOSE_TIMEOUT)
        elif not closing.cancelled() and closing.exception() is not None:
            log.debug("target %s: error while closing: %r", name, closing.exception())

    async def stop(self) -> None:
        """Cancel every poll and close every session, all at once so that a few hung BMCs
        cost one close timeout in total, not one each."""
        await asyncio.gather(*(self._stop_target(name) for name in list(self._runners)))
        self.context.shutdown()
