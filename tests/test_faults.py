"""Fault suite (issue 10, "one bad packet must never stop the poller"): the real scheduler and
the real `hwpoller run` process against healthy snmpsim targets mixed with every hostile peer
class of tests/hostile.py. Healthy targets stay fresh, each bad one fails with its reason
and keeps being retried, no poll task dies, no traceback is logged for a device error, and
SIGTERM still exits 0.

Timing margins are generous on purpose (the machine has two cores shared with other test
runs): freshness is checked against two intervals of several seconds, never speed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from poller.config import parse_config
from poller.driver import Driver, DriverContext, PollSpec, driver_for
from poller.model import DeviceData
from poller.profiles import ProfileSet, load_profiles
from poller.scheduler import Scheduler
from poller.simulator.snmpsim import RECORDINGS, SnmpSim
from poller.store import Store
from tests.hostile import KINDS, HostilePeer, PeerProcess, start_peer
from tests.test_run_e2e import fetch, free_tcp_port, wait_for
from tests.util import poll_once, snmp_config

pytestmark = [pytest.mark.fault, pytest.mark.integration]

# Recordings the healthy targets are served from (community = recording name).
HEALTHY = ("apc-smartups", "rfc1628-ups", "netbotz", "liebert-crac", "geist-watchdog")


@pytest.fixture(scope="module")
def peers(snmpsim: SnmpSim) -> Iterator[dict[str, HostilePeer]]:
    """One running peer per hostile class; the proxying ones distort snmpsim's answers."""
    started: dict[str, HostilePeer] = {}
    try:
        for kind in KINDS:
            started[kind] = start_peer(kind, (snmpsim.host, snmpsim.port))
        yield started
    finally:
        for peer in started.values():
            peer.stop()


@pytest.fixture(autouse=True)
def quiet_rust_panics(monkeypatch: pytest.MonkeyPatch) -> None:
    """As `hwpoller` does at start-up: no Rust backtrace on stderr for a decoder panic."""
    monkeypatch.setenv("RUST_BACKTRACE", "0")


def target(name: str, port: int, auth: str, **extra: Any) -> dict[str, Any]:
    """One SNMP target entry on loopback."""
    return {"name": name, "address": f"127.0.0.1:{port}", "protocol": "snmp", "auth": auth, **extra}


def fault_doc(
    sim_port: int,
    bad: list[tuple[str, int]],
    healthy: int,
    interval: float,
    timeout: float,
    max_backoff: float,
    retries: int = 0,
    healthy_from: tuple[str, ...] = HEALTHY,
) -> dict[str, Any]:
    """A config document: `healthy` snmpsim targets (round robin over `healthy_from`)
    named ok-N, and one target per (name, port) in `bad`, all polled as an APC UPS would
    be."""
    auths: dict[str, Any] = {
        c: {"protocol": "snmp", "version": "2c", "community": c} for c in HEALTHY
    }
    # The panic peers are polled with SNMPv1, which goes through gufo-snmp: its Rust decoder
    # is the one that panics (SNMPv2c has the project's own codec, which raises instead).
    auths["apc-smartups-v1"] = {"protocol": "snmp", "version": "1", "community": "apc-smartups"}
    communities = [healthy_from[i % len(healthy_from)] for i in range(healthy)]
    targets = [target(f"ok-{i}", sim_port, c) for i, c in enumerate(communities)]
    targets += [
        target(name, port, "apc-smartups-v1" if name.startswith("panic") else "apc-smartups")
        for name, port in bad
    ]
    return {
        "settings": {
            "interval": f"{interval}s",
            "timeout": f"{timeout}s",
            "retries": retries,
            "max_backoff": f"{max_backoff}s",
            "jitter": 0.05,
        },
        "auths": auths,
        "targets": targets,
    }


class Recording:
    """Wraps a real driver and records when each successful poll finished (monotonic)."""

    def __init__(self, inner: Driver, log: list[float]) -> None:
        self._inner = inner
        self._log = log

    async def poll(self) -> DeviceData:
        data = await self._inner.poll()
        self._log.append(time.monotonic())
        return data

    async def close(self) -> None:
        await self._inner.close()


@dataclass
class Observed:
    """What the watcher saw while the scheduler ran."""

    checks: int = 0
    stale: list[str] = field(default_factory=list)  # "target: age" at a check
    dead_tasks: list[str] = field(default_factory=list)
    errors_mid: dict[str, int] = field(default_factory=dict)
    errors_end: dict[str, int] = field(default_factory=dict)
    successes: dict[str, list[float]] = field(default_factory=dict)


def total_errors(store: Store, name: str) -> int:
    """All failed polls of a target so far."""
    view = store.get(name)
    return sum(n for _, n in view.errors) if view else 0


async def run_and_watch(
    config_doc: dict[str, Any], seconds: float, interval: float, record: set[str]
) -> tuple[Store, Observed]:
    """Run the real scheduler for `seconds`, checking every 0.5 s (after two intervals of
    warm-up) that the healthy targets are fresh and that every poll task is alive."""
    config = parse_config(yaml.safe_dump(config_doc))
    names = [t.name for t in config.targets]
    healthy = [n for n in names if n.startswith("ok-")]
    observed = Observed(successes={n: [] for n in record})

    def make(spec: PollSpec, context: DriverContext) -> Driver:
        driver = driver_for(spec, context)
        if spec.name in record:
            return Recording(driver, observed.successes[spec.name])
        return driver

    store = Store()
    scheduler = Scheduler(config, load_profiles(), store, make_driver=make)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await scheduler.start()
    try:
        warm_up = 2 * interval
        await asyncio.sleep(warm_up)
        half = started + warm_up + (seconds - warm_up) / 2
        while loop.time() - started < seconds:
            now = time.time()
            observed.checks += 1
            for name in healthy:
                view = store.get(name)
                age = now - view.last_success_at if view and view.last_success_at else None
                if age is None or age > 2 * interval:
                    observed.stale.append(f"{name}: {age}")
            tasks = {t.get_name(): t for t in asyncio.all_tasks() if t.get_name()[:5] == "poll:"}
            missing = [n for n in names if f"poll:{n}" not in tasks or tasks[f"poll:{n}"].done()]
            observed.dead_tasks += missing
            if not observed.errors_mid and loop.time() >= half:
                observed.errors_mid = {n: total_errors(store, n) for n in names}
            await asyncio.sleep(0.5)
        observed.errors_end = {n: total_errors(store, n) for n in names}
    finally:
        await scheduler.stop()
    return store, observed


def device_error_logs(records: list[logging.LogRecord]) -> list[str]:
    """Log records that must never appear for an expected device error."""
    bad = []
    for r in records:
        text = r.getMessage()
        if r.exc_info or "Traceback" in text or "never retrieved" in text:
            bad.append(f"{r.name}: {text}")
    return bad


@pytest.mark.slow(28)
def test_fault_mix_healthy_stay_fresh_bad_keep_retrying(
    snmpsim: SnmpSim, peers: dict[str, HostilePeer], caplog: pytest.LogCaptureFixture
) -> None:
    interval = 3.0
    doc = fault_doc(
        snmpsim.port,
        [(kind, peer.port) for kind, peer in peers.items()],
        healthy=len(HEALTHY),
        interval=interval,
        timeout=2.0,
        max_backoff=6.0,
        retries=1,  # a reply lost on a busy machine must not make a healthy target stale
    )
    requests_before = {k: p.requests for k, p in peers.items()}
    with caplog.at_level(logging.INFO):
        store, seen = asyncio.run(run_and_watch(doc, 27.0, interval, set()))
    assert seen.checks >= 20
    assert not seen.stale, f"healthy targets went stale: {seen.stale[:10]}"
    assert not seen.dead_tasks, f"poll tasks died: {sorted(set(seen.dead_tasks))}"
    views = {v.name: v for v in store.snapshot()}
    for i in range(len(HEALTHY)):
        assert views[f"ok-{i}"].up
    for kind, (_, _, reason) in KINDS.items():
        view = views[kind]
        assert view.last is not None
        assert peers[kind].requests > requests_before[kind], f"{kind} was never asked"
        if not reason:  # the looping agent: up, with every table failed as a stuck walk
            assert view.up
            assert view.last.data is not None and view.last.data.partial_errors
            assert all("walk stuck" in e for e in view.last.data.partial_errors)
            continue
        assert view.last.reason == reason, (kind, view.last.reason, view.last.message)
        assert not view.up and view.last.data is None  # readings dropped, not stale
        errors = dict(view.errors)
        assert errors[reason] == sum(errors.values()), (kind, errors)  # always that reason
        # Still retried in the second half of the run: the error counter kept increasing.
        assert seen.errors_end[kind] > seen.errors_mid[kind] > 0, (kind, seen)
    # The looping agent's walks stop at the first repeated OID: a handful of requests per
    # poll, never an endless walk.
    looping_polls = max(1, int(27.0 / interval))
    assert peers["looping"].requests - requests_before["looping"] < 40 * looping_polls
    assert not device_error_logs(caplog.records)
    messages = [r.getMessage() for r in caplog.records]
    for kind, (_, _, reason) in KINDS.items():
        if reason:
            assert sum(f"target {kind} is down" in m for m in messages) == 1, kind


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of `name` whose labels include `labels`."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.slow(14)
def test_hwpoller_run_survives_the_fault_mix_and_exits_0_on_sigterm(
    snmpsim: SnmpSim, peers: dict[str, HostilePeer], tmp_path: Path
) -> None:
    config = tmp_path / "hwpoller.yml"
    bad = [(kind, peer.port) for kind, peer in peers.items()]
    doc = fault_doc(snmpsim.port, bad, healthy=2, interval=2.0, timeout=1.5, max_backoff=4.0)
    config.write_text(yaml.safe_dump(doc))
    port = free_tcp_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "stderr.log"
    # The environment of this machine sets RUST_BACKTRACE=1; hwpoller must override it.
    env = {**os.environ, "RUST_BACKTRACE": "1"}
    argv = [sys.executable, "-m", "poller", "run", "--config.file", str(config)]
    argv += ["--web.listen-address", f"127.0.0.1:{port}"]
    panics_before = peers["panic"].requests
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for(lambda: fetch(f"{base}/healthz")[0] == 200)

            def errors(metrics: str) -> dict[str, float]:
                """Each failing hostile target's error count for its expected reason."""
                return {
                    kind: metric(metrics, "hwpoller_poll_errors_total", device=kind, reason=reason)
                    or 0.0
                    for kind, (_, _, reason) in KINDS.items()
                    if reason
                }

            def scrape() -> str:
                return fetch(f"{base}/metrics")[1]

            wait_for(
                lambda: (
                    min(errors(scrape()).values()) >= 2
                    and metric(scrape(), "hwpoller_up", device="ok-0") == 1.0
                ),
                timeout=40,
            )
            # A reload that changes every target (shorter timeout) and adds one.
            doc = fault_doc(
                snmpsim.port, [*bad, ("ok-late", snmpsim.port)], 2, 2.0, 1.4, max_backoff=4.0
            )
            config.write_text(yaml.safe_dump(doc))
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "reloaded" in log_path.read_text())
            wait_for(lambda: metric(scrape(), "hwpoller_up", device="ok-late") == 1.0)
            # The hostile targets are still being polled after the reload.
            counts = errors(scrape())
            wait_for(lambda: all(n > counts[k] for k, n in errors(scrape()).items()), timeout=30)
            # The looping agent's walks fail, its scalars answer: up (with partial errors).
            wait_for(lambda: metric(scrape(), "hwpoller_up", device="looping") == 1.0)
            assert metric(scrape(), "hwpoller_up", device="ok-0") == 1.0
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
            assert time.monotonic() - started < 10
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs = log_path.read_text(errors="replace")
    assert peers["panic"].requests - panics_before >= 3  # the decoder really panicked
    assert "panicked at" in logs  # Rust's one-line message, at most ...
    assert "stack backtrace" not in logs  # ... never a backtrace
    assert "Traceback" not in logs
    assert "never retrieved" not in logs
    for kind, (_, _, reason) in KINDS.items():
        if reason:
            assert logs.count(f"target {kind} is down: {reason}") == 1, kind


def warm_up(sim: SnmpSim, communities: tuple[str, ...], profiles: ProfileSet) -> None:
    """Poll each recording once: snmpsim indexes a recording on first use, which can take
    seconds, and a test about the poller must not measure that."""
    for community in communities:
        config = snmp_config(sim.port, community, timeout="20s")
        result = asyncio.run(poll_once(config, profiles))
        assert result.success, (community, result.reason, result.message)


@pytest.mark.slow(60)
def test_two_hundred_targets_fault_mix(caplog: pytest.LogCaptureFixture) -> None:
    """120 healthy, 40 black-holed, 20 slow and 20 malformed targets for ~1 min: no healthy
    poll is missed, every bad target fails with its reason and keeps being retried.

    snmpsim (pure Python) answered 5 to 20 APC polls a second on this (shared, two-core)
    machine, so the healthy targets are small RFC 1628 UPSs with their profile configured
    (three requests a poll, no detection), spread over two snmpsim processes at a 10 s
    interval; the hostile peers run in a child process of their own. The test is about
    the poller keeping healthy targets fresh, not about snmpsim's capacity.
    """
    interval, seconds = 10.0, 55.0
    malformed = ("truncated", "garbage", "panic", "wrong-request-id")
    sims = [SnmpSim(data_dirs=[RECORDINGS]) for _ in range(2)]
    try:
        profiles = load_profiles()
        for sim in sims:
            sim.start()
            warm_up(sim, ("rfc1628-ups", "apc-smartups"), profiles)
        with PeerProcess(["blackhole", "slow", *malformed], (sims[0].host, sims[0].port)) as pp:
            ports = pp.ports
            bad = [(f"blackhole-{i}", ports["blackhole"]) for i in range(40)]
            bad += [(f"slow-{i}", ports["slow"]) for i in range(20)]
            bad += [(f"{malformed[i % 4]}-{i}", ports[malformed[i % 4]]) for i in range(20)]
            doc = fault_doc(
                sims[0].port, bad, healthy=120, interval=interval, timeout=8.0,
                max_backoff=12.0, retries=2, healthy_from=("rfc1628-ups",),
            )  # fmt: skip
            for i, entry in enumerate(doc["targets"][:120]):
                entry["profile"] = "rfc1628-ups"
                if i % 2:  # every other healthy target: the second snmpsim
                    entry["address"] = f"127.0.0.1:{sims[1].port}"
            healthy = {f"ok-{i}" for i in range(120)}
            with caplog.at_level(logging.INFO):
                store, seen = asyncio.run(run_and_watch(doc, seconds, interval, healthy))
    finally:
        for sim in sims:
            sim.stop()
    views = {v.name: v for v in store.snapshot()}
    # A missed poll of a healthy target: a failed one, or a gap of more than two intervals
    # between successes (or no success at all).
    failed = {n: total_errors(store, n) for n in healthy if total_errors(store, n)}
    gaps: dict[str, float | None] = {}
    for name, times in seen.successes.items():
        longest = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
        if not times or longest > 2 * interval:
            gaps[name] = round(longest, 2) if times else None
    reasons: Counter[str] = Counter()
    last_reasons: Counter[str] = Counter()
    for name, view in views.items():
        reasons.update({r: n for r, n in view.errors if n})
        if name not in healthy and view.last is not None:
            last_reasons[f"{name.rsplit('-', 1)[0]}:{view.last.reason}"] += 1
    polls = sum(len(t) for t in seen.successes.values())
    tracebacks = device_error_logs(caplog.records)
    report = (
        f"200-target fault mix, {seconds:.0f}s at {interval:.0f}s: healthy polls {polls}, "
        f"missed {sum(failed.values()) + len(gaps)} (failed {failed}, gaps {gaps}); "
        f"errors per reason {dict(reasons)}; last reason per class {dict(last_reasons)}; "
        f"stale at checks {len(seen.stale)}; dead tasks {len(set(seen.dead_tasks))}; "
        f"tracebacks {len(tracebacks)}"
    )
    print(report)
    assert not failed and not gaps, report
    assert not seen.stale and not seen.dead_tasks, report
    assert not tracebacks, report
    assert polls >= 120 * (seconds / interval - 2), report
    expected = {"blackhole": "timeout", "slow": "timeout", "truncated": "protocol"}
    expected |= {"garbage": "protocol", "panic": "protocol", "wrong-request-id": "timeout"}
    for name, view in views.items():
        if name in healthy:
            continue
        kind = name.rsplit("-", 1)[0]
        assert view.last is not None and view.last.reason == expected[kind], (name, report)
        assert seen.errors_end[name] > seen.errors_mid[name], (name, report)


def test_failed_polls_do_not_hold_sockets_until_garbage_collection(
    peers: dict[str, HostilePeer],
) -> None:
    """A target whose session is dropped after each failure (here: the decoder panic) opens
    a new socket per poll; the old one must close when dropped, not when the cyclic garbage
    collector happens to run (a reference cycle through a failed poll's traceback once kept
    every dropped session open: 270 fds instead of 68 after three minutes of soak)."""
    import gc

    names = [f"panic-{i}" for i in range(5)]
    doc = fault_doc(0, [(n, peers["panic"].port) for n in names], 0, 1.0, 0.5, max_backoff=1.0)
    config = parse_config(yaml.safe_dump(doc))

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def go() -> tuple[int, int, int]:
        store = Store()
        scheduler = Scheduler(config, load_profiles(), store)
        await scheduler.start()
        await asyncio.sleep(2.5)
        first, polls_before = open_fds(), sum(total_errors(store, n) for n in names)
        await asyncio.sleep(6.0)
        last, polls = open_fds(), sum(total_errors(store, n) for n in names) - polls_before
        await scheduler.stop()
        return first, last, polls

    gc.collect()
    gc.disable()
    try:
        first, last, polls = asyncio.run(go())
    finally:
        gc.enable()
    assert polls >= 15, polls  # each of them dropped a session with its socket
    assert last - first <= 3, (first, last, polls)
