"""Scheduler: deadlines, backoff, internal errors, log-once, reload."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

import pytest
import yaml

from poller.config import parse_config
from poller.driver import Driver, DriverContext, PollSpec
from poller.errors import AuthError
from poller.ipmi import IpmiResource
from poller.model import DeviceData, DeviceInfo, Quantity, Reading
from poller.profiles import load_profiles
from poller.scheduler import Scheduler, TargetRunner, backoff_delay
from poller.store import Store


def config_for(names: list[str], interval: str = "1s", timeout: str = "0.3s") -> object:
    doc = {
        "settings": {"interval": interval, "timeout": timeout, "jitter": 0},
        "auths": {"a": {"protocol": "snmp", "community": "c"}},
        "targets": [
            {"name": n, "address": "127.0.0.1", "protocol": "snmp", "auth": "a"} for n in names
        ],
    }
    return parse_config(yaml.safe_dump(doc))


class Scripted:
    """A driver whose polls follow a script: 'ok', 'hang', 'auth', 'boom'."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.calls = 0
        self.closed = False

    async def poll(self) -> DeviceData:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if step == "hang":
            await asyncio.sleep(3600)
        if step == "auth":
            raise AuthError("bad password")
        if step == "boom":
            raise ZeroDivisionError("bug")
        return DeviceData(DeviceInfo(), (Reading(Quantity.FAN_SPEED, "fan1", 1200.0),))

    async def close(self) -> None:
        self.closed = True


def runner_for(driver: Scripted, store: Store) -> TargetRunner:
    config = config_for(["t"])
    target = config.targets[0]  # type: ignore[attr-defined]
    store.register("t", "snmp", {})
    return TargetRunner(PollSpec.from_config(config, target), {}, driver, store, 0, 300)  # type: ignore[arg-type]


def test_backoff() -> None:
    assert backoff_delay(30, 0, 300) == 30
    assert backoff_delay(30, 1, 300) == 30
    assert backoff_delay(30, 2, 300) == 60
    assert backoff_delay(30, 4, 300) == 240
    assert backoff_delay(30, 9, 300) == 300
    assert backoff_delay(600, 5, 300) == 600  # never faster than the interval


def test_deadline_error_reasons_and_log_once(caplog: pytest.LogCaptureFixture) -> None:
    store = Store()
    driver = Scripted(["hang", "auth", "auth", "boom", "boom", "ok", "ok"])
    runner = runner_for(driver, store)

    async def go() -> list[str]:
        return [(await runner.poll_once()).reason for _ in range(7)]

    with caplog.at_level(logging.INFO, logger="hwpoller"):
        reasons = asyncio.run(go())
    assert reasons == ["timeout", "auth", "auth", "internal", "internal", "", ""]
    view = store.get("t")
    assert view is not None
    assert view.up
    errors = dict(view.errors)
    assert errors["timeout"] == 1
    assert errors["auth"] == 2
    assert errors["internal"] == 2
    messages = [r.getMessage() for r in caplog.records]
    assert sum("is down" in m for m in messages) == 1  # once, at the first failure
    # While down, one more line each time the reason changes, never one per failed poll.
    still = [m for m in messages if "still down" in m]
    assert len(still) == 2, still
    assert "now auth" in still[0]
    assert "now internal" in still[1]
    assert sum("is up again" in m for m in messages) == 1
    # An unexpected exception is logged with its traceback once, not on every poll.
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1


async def until(condition: Callable[[], bool]) -> None:
    """Wait (at most 10 s) for a condition instead of a fixed sleep: the machine may be busy."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met within 10 s")


def test_scheduler_reload_keeps_unchanged_and_closes_removed() -> None:
    drivers: dict[str, Scripted] = {}

    def make(spec: PollSpec, context: DriverContext) -> Driver:
        drivers[spec.name] = Scripted(["ok"])
        return drivers[spec.name]

    async def go() -> tuple[Store, Scripted, Scripted]:
        store = Store()
        scheduler = Scheduler(config_for(["a", "b"]), load_profiles(), store, make_driver=make)  # type: ignore[arg-type]
        await scheduler.start()
        first_a, first_b = drivers["a"], drivers["b"]
        await until(lambda: first_a.calls >= 1 and first_b.calls >= 1)
        await scheduler.apply(config_for(["a", "c"]))  # type: ignore[arg-type]
        await until(lambda: drivers["c"].calls >= 1 and first_a.calls >= 2)
        assert drivers["a"] is first_a  # unchanged target kept its driver (and session)
        assert set(scheduler.runners) == {"a", "c"}
        await scheduler.stop()
        return store, first_a, first_b

    store, a, b = asyncio.run(go())
    assert b.closed  # removed target's session closed on reload
    assert a.closed  # and every session on shutdown
    assert [v.name for v in store.snapshot()] == ["a", "c"]
    assert a.calls >= 2


def mixed_config(
    interval_b: str = "1s",
    log_level: str = "info",
    label: str = "x",
    ipmi_threads: int = 8,
    jitter: float = 0,
) -> object:
    """Two SNMP targets and a BMC, with knobs a reload may turn."""
    doc = {
        "settings": {
            "interval": "1s",
            "timeout": "0.3s",
            "jitter": jitter,
            "log_level": log_level,
            "ipmi_threads": ipmi_threads,
        },
        "auths": {
            "a": {"protocol": "snmp", "community": "c"},
            "bmc": {"protocol": "ipmi", "username": "u", "password": "p"},
        },
        "targets": [
            {"name": "a", "address": "127.0.0.1", "protocol": "snmp", "auth": "a"},
            {
                "name": "b",
                "address": "127.0.0.1",
                "protocol": "snmp",
                "auth": "a",
                "interval": interval_b,
                "labels": {"rack": label},
            },
            {"name": "bmc", "address": "127.0.0.1", "protocol": "ipmi", "auth": "bmc"},
        ],
    }
    return parse_config(yaml.safe_dump(doc))


def test_reload_restarts_only_what_changed() -> None:
    made: list[str] = []

    def make(spec: PollSpec, context: DriverContext) -> Driver:
        made.append(spec.name)
        return Scripted(["ok"])

    async def go() -> list[int]:
        store = Store()
        scheduler = Scheduler(mixed_config(), load_profiles(), store, make_driver=make)  # type: ignore[arg-type]
        await scheduler.start()
        restarted = [
            # log level, labels, jitter: nothing restarts (each restart is a new BMC login)
            await scheduler.apply(mixed_config(log_level="debug"), load_profiles()),  # type: ignore[arg-type]
            await scheduler.apply(mixed_config(log_level="debug", label="y")),  # type: ignore[arg-type]
            await scheduler.apply(mixed_config(log_level="debug", label="y", jitter=0.2)),  # type: ignore[arg-type]
            # one target's interval: that target only
            await scheduler.apply(mixed_config(interval_b="2s", label="y", jitter=0.2)),  # type: ignore[arg-type]
            # IPMI's thread pool size: the IPMI targets only
            await scheduler.apply(  # type: ignore[arg-type]
                mixed_config(interval_b="2s", label="y", jitter=0.2, ipmi_threads=4)
            ),
        ]
        view = store.get("b")
        assert view is not None
        assert dict(view.labels) == {"rack": "y"}  # the label changed without a restart
        # The IPMI thread pool is made anew from the new settings.
        assert scheduler.context.resource("ipmi", IpmiResource).threads == 4
        await scheduler.stop()
        return restarted

    assert asyncio.run(go()) == [0, 0, 0, 1, 1]
    assert made == ["a", "b", "bmc", "b", "bmc"]


class NotAnException(BaseException):
    """Like pyo3's PanicException: derives from BaseException, so `except Exception` misses
    it."""


class Hostile:
    """A misbehaving driver: 'panic' raises a BaseException, 'stubborn' ignores the deadline's
    cancellation for a while, 'selfcancel' cancels its own task, 'ok' succeeds. Its close
    can panic too."""

    def __init__(self, step: str, close_panics: bool = False) -> None:
        self.step = step
        self.calls = 0
        self.close_panics = close_panics
        self.swallowed = 0

    async def poll(self) -> DeviceData:
        self.calls += 1
        if self.step == "panic":
            raise NotAnException("index out of bounds")
        if self.step == "selfcancel":
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)
        if self.step == "stubborn":
            # Swallows every cancellation for up to 2 s (bounded, so the test always ends).
            deadline = asyncio.get_running_loop().time() + 2.0
            while asyncio.get_running_loop().time() < deadline:
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    self.swallowed += 1
        return DeviceData(DeviceInfo(), (Reading(Quantity.FAN_SPEED, "fan1", 1200.0),))

    async def close(self) -> None:
        if self.close_panics:
            raise NotAnException("panic while closing")


def hostile_scheduler(
    drivers: dict[str, Hostile], steps: dict[str, str], **kwargs: bool
) -> Callable[[PollSpec, DriverContext], Driver]:
    def make(spec: PollSpec, context: DriverContext) -> Driver:
        drivers[spec.name] = Hostile(steps.get(spec.name, "ok"), **kwargs)
        return drivers[spec.name]

    return make


def test_no_exception_class_ends_a_poll_task(caplog: pytest.LogCaptureFixture) -> None:
    drivers: dict[str, Hostile] = {}
    steps = {"panic": "panic", "selfcancel": "selfcancel", "stubborn": "stubborn"}
    names = ["ok", *steps]
    make = hostile_scheduler(drivers, steps, close_panics=True)

    async def go() -> Store:
        store = Store()
        # 0.3 s deadline, 1 s interval; backoff capped at 1 s so failing targets keep going.
        config = config_for(names)
        config = config.model_copy(  # type: ignore[attr-defined]
            update={"settings": config.settings.model_copy(update={"max_backoff": 1.0})}  # type: ignore[attr-defined]
        )
        scheduler = Scheduler(config, load_profiles(), store, make_driver=make)
        await scheduler.start()
        await until(lambda: all(d.calls >= 3 for n, d in drivers.items() if n != "stubborn"))
        await until(lambda: drivers["stubborn"].calls >= 2)
        tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("poll:")]
        assert len(tasks) == len(names) and not any(t.done() for t in tasks)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await scheduler.stop()  # every close panics: the stop still completes
        assert loop.time() - started < 10
        return store

    with caplog.at_level(logging.INFO, logger="hwpoller"):
        store = asyncio.run(go())
    views = {v.name: v for v in store.snapshot()}
    assert views["ok"].up
    for name in ("panic", "selfcancel"):
        errors = dict(views[name].errors)
        assert errors["internal"] >= 3, (name, errors)  # counted, and retried
    stubborn = dict(views["stubborn"].errors)
    assert stubborn["timeout"] >= 2, stubborn
    assert drivers["stubborn"].swallowed >= 1  # it really did ignore the deadline
    # A stubborn poll still running is never joined by a second one.
    assert drivers["stubborn"].calls <= stubborn["timeout"]
    # One traceback, for the panic; the self-cancel is logged once without one.
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in tracebacks] == ["target panic: unexpected error while polling"]
    assert sum("target selfcancel:" in r.getMessage() for r in caplog.records) == 1
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def test_a_killed_task_is_restarted_and_reload_still_works(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    drivers: dict[str, Hostile] = {}
    make = hostile_scheduler(drivers, {})
    real_run = TargetRunner.run
    died: list[str] = []

    async def dies_once(
        self: TargetRunner, first_delay: float | None = None, spread: float = 10.0
    ) -> None:
        # The first task of target "a" dies of a BaseException outside any poll: the
        # situation the scheduler's supervision exists for.
        if self.spec.name == "a" and not died:
            died.append("a")
            raise NotAnException("task died")
        await real_run(self, first_delay, spread)

    monkeypatch.setattr(TargetRunner, "run", dies_once)

    async def go() -> Store:
        store = Store()
        scheduler = Scheduler(config_for(["a", "b"]), load_profiles(), store, make_driver=make)  # type: ignore[arg-type]
        await scheduler.start()
        await until(lambda: drivers["a"].calls >= 1 and drivers["b"].calls >= 1)
        # Someone else cancels b's task: it is restarted, not left dead.
        next(t for t in asyncio.all_tasks() if t.get_name() == "poll:b").cancel()
        b_calls = drivers["b"].calls
        await until(lambda: drivers["b"].calls > b_calls)
        # A reload that changes "a" (new timeout) and adds "c".
        await scheduler.apply(config_for(["a", "b", "c"], timeout="0.4s"))  # type: ignore[arg-type]
        await until(lambda: "c" in drivers and drivers["c"].calls >= 1)
        await until(lambda: drivers["a"].calls >= 1)
        assert set(scheduler.runners) == {"a", "b", "c"}
        await scheduler.stop()
        return store

    with caplog.at_level(logging.INFO):
        store = asyncio.run(go())
        gc.collect()
    assert died == ["a"]
    views = {v.name: v for v in store.snapshot()}
    assert dict(views["a"].errors)["internal"] == 1  # the death was counted once
    assert dict(views["b"].errors)["internal"] == 1  # so was the outside cancellation
    assert views["c"].up
    messages = [r.getMessage() for r in caplog.records]
    assert "target a: its poll task died; restarted" in messages
    assert "target b: its poll task was cancelled from outside; restarted" in messages
    assert not [m for m in messages if "never retrieved" in m]


def test_first_polls_spread_with_the_number_of_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart with thousands of targets starts at most START_RATE first polls a second."""
    from poller import scheduler as scheduler_module

    spreads: list[float] = []

    async def record(
        self: TargetRunner, first_delay: float | None = None, spread: float = 0
    ) -> None:
        spreads.append(spread)

    monkeypatch.setattr(TargetRunner, "run", record)
    monkeypatch.setattr(scheduler_module, "START_RATE", 10.0)

    async def go(count: int) -> None:
        spreads.clear()
        names = [f"t{i}" for i in range(count)]
        scheduler = Scheduler(
            config_for(names, interval="60s", timeout="5s"),  # type: ignore[arg-type]
            load_profiles(),
            Store(),
            make_driver=lambda spec, context: Scripted(["ok"]),  # type: ignore[arg-type, return-value]
        )
        await scheduler.start()
        await asyncio.sleep(0)
        await scheduler.stop()

    asyncio.run(go(50))
    assert set(spreads) == {10.0}  # a few targets: the usual 10 s
    asyncio.run(go(300))
    assert set(spreads) == {30.0}  # 300 at 10 a second


def test_backoff_is_spread_wider_than_the_interval_jitter() -> None:
    runner = runner_for(Scripted(["ok"]), Store())
    runner._jitter = 0.1
    runner._failures = 3
    delays = [runner.next_delay() for _ in range(400)]
    base = backoff_delay(runner.spec.interval, 3, runner._max_backoff)
    assert min(delays) < base * 0.85 and max(delays) > base * 1.15
    assert all(base * 0.75 <= d <= base * 1.25 for d in delays)
    # After one failure the delay is the interval: spread wider, but never below what a
    # healthy poll's jitter allows.
    runner._failures = 1
    interval = runner.spec.interval
    delays = [runner.next_delay() for _ in range(400)]
    assert min(delays) >= interval * 0.9
    assert max(delays) > interval * 1.15


def test_frequent_reloads_keep_each_restarted_runners_schedule() -> None:
    """Two configs that differ only in the timeout (so the runner restarts) pushed every
    0.3 s: the target still polls once per interval, at the times its schedule says, instead
    of starting over with a new random first delay at every reload."""
    polls: list[float] = []

    class Timed(Scripted):
        async def poll(self) -> DeviceData:
            polls.append(asyncio.get_running_loop().time())
            return await super().poll()

    def make(spec: PollSpec, context: DriverContext) -> Driver:
        return Timed(["ok"])  # type: ignore[return-value]

    async def go() -> None:
        configs = [config_for(["t"], "1.5s", "0.3s"), config_for(["t"], "1.5s", "0.4s")]
        scheduler = Scheduler(configs[0], load_profiles(), Store(), make_driver=make)  # type: ignore[arg-type]
        await scheduler.start()
        await until(lambda: len(polls) >= 1)
        for i in range(20):  # 6 s of reloads, each one restarting the runner
            await asyncio.sleep(0.3)
            assert await scheduler.apply(configs[(i + 1) % 2]) == 1  # type: ignore[arg-type]
        await scheduler.stop()

    asyncio.run(go())
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert len(polls) >= 4, polls
    # jitter 0: every gap is the interval (a reload never polls early or late).
    assert all(abs(gap - 1.5) < 0.2 for gap in gaps), gaps


def test_a_changed_interval_starts_a_new_schedule() -> None:
    runner_config = config_for(["t"], "1s")
    target = runner_config.targets[0]  # type: ignore[attr-defined]
    store = Store()
    store.register("t", "snmp", {})
    old = TargetRunner(
        PollSpec.from_config(runner_config, target), {}, Scripted(["ok"]), store, 0, 300
    )  # type: ignore[arg-type]
    old.next_due = 10**9  # far away: whatever the clock, not due yet
    same = TargetRunner(
        PollSpec.from_config(runner_config, target), {}, Scripted(["ok"]), store, 0, 300
    )  # type: ignore[arg-type]
    assert same.inherited_delay(old) is not None and same.inherited_delay(old) > 0  # type: ignore[operator]
    other_config = config_for(["t"], "2s")
    other = TargetRunner(
        PollSpec.from_config(other_config, other_config.targets[0]),
        {},
        Scripted(["ok"]),
        store,
        0,
        300,
    )  # type: ignore[arg-type, attr-defined]
    assert other.inherited_delay(old) is None
    fresh = TargetRunner(
        PollSpec.from_config(runner_config, target), {}, Scripted(["ok"]), store, 0, 300
    )  # type: ignore[arg-type]
    assert same.inherited_delay(fresh) is None  # nothing planned yet


def test_a_device_errors_message_is_made_safe_before_the_store_sees_it() -> None:
    """A driver's error may quote the device (a lone surrogate, a newline, a bidi override,
    a megabyte): the stored message encodes, stays on one line and is bounded."""

    class Quoting(Scripted):
        async def poll(self) -> DeviceData:
            raise AuthError("device said: \ud800 \n\u202eevil" + "x" * 100_000)

    async def go() -> str:
        store = Store()
        runner = runner_for(Quoting(["ok"]), store)
        result = await runner.poll_once()
        return result.message

    message = asyncio.run(go())
    message.encode()  # no lone surrogate left
    assert "\n" not in message and "\u202e" not in message
    assert message.startswith("device said:")
    assert len(message) <= 1024
