"""Scheduler: deadlines, backoff, internal errors, log-once, reload."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
import yaml

from poller.config import parse_config
from poller.drivers import Driver, DriverContext, PollSpec
from poller.errors import AuthError
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
