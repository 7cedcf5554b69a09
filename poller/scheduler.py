"""One asyncio task per target: interval, jitter, outer deadline, backoff, one poll in flight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

from poller.config import Config, Target
from poller.drivers import Driver, DriverContext, PollSpec, driver_for
from poller.errors import DeviceError
from poller.model import DeviceData, PollResult
from poller.profiles import ProfileSet
from poller.store import Store

log = logging.getLogger("hwpoller.scheduler")

# The first poll of each target is spread over this many seconds (or the interval, if
# shorter) so that a restart does not hit every device at the same instant.
START_SPREAD = 10.0
# How long shutdown waits for drivers to close their sessions.
CLOSE_TIMEOUT = 3.0

DriverMaker = Callable[[PollSpec, DriverContext], Driver]


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
        self.stopping = False

    def inherit(self, previous: TargetRunner) -> None:
        """Continue the up/down bookkeeping of the runner this one replaces."""
        self._failures = previous._failures
        self._was_up = previous._was_up
        self._partial = previous._partial
        self._down_reason = previous._down_reason

    async def run(self) -> None:
        """Poll on schedule until stopped."""
        await asyncio.sleep(random.uniform(0, min(self.spec.interval, START_SPREAD)))
        while not self.stopping:
            started = time.monotonic()
            await self.poll_once()
            delay = backoff_delay(self.spec.interval, self._failures, self._max_backoff)
            delay *= 1 + random.uniform(-self._jitter, self._jitter)
            await asyncio.sleep(max(0.0, started + delay - time.monotonic()))

    async def poll_once(self) -> PollResult:
        """One poll under the outer deadline; the result goes to the store."""
        started = time.monotonic()
        data: DeviceData | None = None
        reason = message = ""
        try:
            async with asyncio.timeout(self.spec.timeout):
                data = await self.driver.poll()
        except TimeoutError:
            reason, message = "timeout", f"poll did not finish within {self.spec.timeout:.3g}s"
        except DeviceError as exc:
            reason, message = exc.reason, str(exc)
        except asyncio.CancelledError:
            raise
        except Exception:  # an unexpected bug must never kill the target's task
            reason, message = "internal", "internal error (see log)"
            if not self._logged_internal:
                log.exception("target %s: unexpected error while polling", self.spec.name)
                self._logged_internal = True
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
        self.context = DriverContext(
            profiles, config.settings.snmp_concurrency, config.settings.ipmi_threads
        )

    @property
    def runners(self) -> dict[str, TargetRunner]:
        """The running target runners by target name."""
        return dict(self._runners)

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

    async def apply(self, config: Config, profiles: ProfileSet | None = None) -> None:
        """Bring the running targets in line with a (new) config; unchanged ones keep going,
        with their sessions, and replaced ones keep their up/down state so that a reload does
        not log every down target again."""
        old_profiles = self.context.profiles
        profiles_changed = profiles is not None and (
            profiles.names != old_profiles.names
            or any(profiles.get(n) != old_profiles.get(n) for n in profiles.names)
        )
        if profiles is not None:
            self.context.profiles = profiles
        old = self._config
        self._config = config
        wanted = {t.name: t for t in config.targets}
        carried: dict[str, TargetRunner] = {}
        for name in list(self._runners):
            target = wanted.get(name)
            unchanged = (
                target is not None
                and not profiles_changed
                and PollSpec.from_config(config, target) == self._runners[name].spec
                and target.labels == self._runners[name].labels
                and old.settings == config.settings
            )
            if not unchanged:
                carried[name] = self._runners[name]
                await self._stop_target(name)
        self._store.retain(set(wanted))
        for name, target in wanted.items():
            if name in self._runners:
                continue
            self._store.register(name, target.protocol, target.labels)
            runner = self._runner(config, target)
            if name in carried:
                runner.inherit(carried[name])
            self._runners[name] = runner
            self._tasks[name] = asyncio.create_task(runner.run(), name=f"poll:{name}")

    async def _stop_target(self, name: str) -> None:
        runner = self._runners.pop(name)
        task = self._tasks.pop(name)
        runner.stopping = True
        # Python 3.11's asyncio.wait_for (inside the SNMP library) can swallow a cancellation
        # that races with a reply; the task then sleeps on as if nothing happened. Cancel
        # until it is really gone; the stopping flag ends its loop at the latest.
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.5)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            task.result()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await runner.driver.close()
        except TimeoutError:
            log.debug("target %s: session close did not finish in %ss", name, CLOSE_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - a broken session must not stop the others closing
            log.debug("target %s: error while closing: %r", name, exc)

    async def stop(self) -> None:
        """Cancel every poll and close every session, all at once so that a few hung BMCs
        cost one close timeout in total, not one each."""
        await asyncio.gather(*(self._stop_target(name) for name in list(self._runners)))
        self.context.shutdown()
