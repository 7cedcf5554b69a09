"""Soak: the fault mix for a few minutes; file descriptors, threads, RSS and asyncio tasks at
the start and the end. Anything that leaks per poll, per failure or per reload shows as a
delta that grows with SOAK_SECONDS.

The poller (real scheduler, real drivers, the exporter rendering as a scrape would) runs in
this process; snmpsim and the hostile peers run in child processes, so what is measured is
the poller's alone. Every 30 s the config is reloaded with every target changed, which
replaces each runner, driver and socket.

    make soak                       # 180 s
    SOAK_SECONDS=600 make soak
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from poller.app import raise_open_files_limit, setup_logging
from poller.config import parse_config
from poller.exporter import exposition
from poller.profiles import load_profiles
from poller.scheduler import Scheduler
from poller.simulator.snmpsim import SnmpSim
from poller.store import Store
from tests.hostile import PeerProcess

# Small recordings: snmpsim (pure Python) must keep up on a busy two-core machine.
HEALTHY = ("rfc1628-ups", "liebert-crac", "apc-smartups")
# Hostile targets per class.
MIX = {
    "blackhole": 10,
    "slow": 5,
    "truncated": 5,
    "garbage": 5,
    "panic": 5,
    "wrong-request-id": 5,
    "looping": 2,
}
RELOAD_EVERY = 30.0


@dataclass(frozen=True)
class Sample:
    """Resource use of this process at one moment."""

    at: float
    fds: int
    threads: int
    rss_mib: float
    tasks: int

    def line(self) -> str:
        """One line for the report."""
        return (
            f"t={self.at:6.0f}s  fds={self.fds:4d}  threads={self.threads:3d}  "
            f"rss={self.rss_mib:6.1f} MiB  asyncio tasks={self.tasks:4d}"
        )


def sample(started: float) -> Sample:
    """Count open fds and threads and read RSS from /proc; count this loop's tasks."""
    rss_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return Sample(
        at=time.monotonic() - started,
        fds=len(os.listdir("/proc/self/fd")),
        threads=threading.active_count(),
        rss_mib=rss_pages * resource.getpagesize() / 2**20,
        tasks=len(asyncio.all_tasks()),
    )


def config_doc(sim_port: int, ports: dict[str, int], interval: float, generation: int) -> str:
    """The soak config; `generation` changes every target's timeout so a reload replaces
    all of them."""
    auths = {c: {"protocol": "snmp", "version": "2c", "community": c} for c in HEALTHY}
    targets: list[dict[str, Any]] = [
        {
            "name": f"ok-{i}",
            "address": f"127.0.0.1:{sim_port}",
            "protocol": "snmp",
            "auth": HEALTHY[i % len(HEALTHY)],
        }
        for i in range(20)
    ]
    for kind, count in MIX.items():
        targets += [
            {
                "name": f"{kind}-{i}",
                "address": f"127.0.0.1:{ports[kind]}",
                "protocol": "snmp",
                "auth": "apc-smartups",
            }
            for i in range(count)
        ]
    timeout = 1.5 if generation % 2 == 0 else 1.4
    doc = {
        "settings": {
            "interval": f"{interval}s",
            "timeout": f"{timeout}s",
            "retries": 0,
            "max_backoff": "8s",
        },
        "auths": auths,
        "targets": targets,
    }
    return yaml.safe_dump(doc)


async def soak(sim_port: int, ports: dict[str, int], seconds: float, interval: float) -> None:
    """Run the mix, reloading every RELOAD_EVERY seconds, and print samples."""
    profiles = load_profiles()
    store = Store()
    scheduler = Scheduler(parse_config(config_doc(sim_port, ports, interval, 0)), profiles, store)
    started = time.monotonic()
    await scheduler.start()
    # The first round of polls (spread over the interval) opens every socket: measure
    # from there, not from an empty process.
    await asyncio.sleep(3 * interval)
    gc.collect()
    first = sample(started)
    print("start ", first.line(), flush=True)
    generation, next_reload, next_print = 0, time.monotonic() + RELOAD_EVERY, 0.0
    scrapes = 0
    while time.monotonic() - started < seconds:
        await asyncio.sleep(1.0)
        exposition(store)  # what a Prometheus scrape renders
        scrapes += 1
        # No reload in the last three intervals: the end sample must see every target's
        # sockets open again, as the start sample did.
        left = seconds - (time.monotonic() - started)
        if time.monotonic() >= next_reload and left > 3 * interval:
            generation += 1
            config = parse_config(config_doc(sim_port, ports, interval, generation))
            await scheduler.apply(config)
            next_reload = time.monotonic() + RELOAD_EVERY
        if time.monotonic() - started >= next_print:
            print("      ", sample(started).line(), flush=True)
            next_print += 30.0
    # Open fds before a full garbage collection show sockets kept alive by reference
    # cycles (freed only when the cyclic collector runs); after it, real leaks.
    before_gc = sample(started)
    gc.collect()
    last = sample(started)
    await scheduler.stop()
    views = store.snapshot()
    errors: dict[str, int] = {}
    for view in views:
        for reason, n in view.errors:
            errors[reason] = errors.get(reason, 0) + n
    healthy = [v for v in views if v.name.startswith("ok-")]
    healthy_failed = {
        v.name: {r: n for r, n in v.errors if n} for v in healthy if any(n for _, n in v.errors)
    }
    print("end   ", last.line(), f"(fds before gc.collect: {before_gc.fds})")
    # Thread names, so that a growing pool can be told from a leak (asyncio's default
    # executor, which runs getaddrinfo, grows lazily to min(32, cpus + 4) threads).
    names = sorted(t.name.rstrip("0123456789_") for t in threading.enumerate())
    print("threads", {n: names.count(n) for n in dict.fromkeys(names)})
    print(
        f"delta  fds={last.fds - first.fds:+d}  threads={last.threads - first.threads:+d}  "
        f"rss={last.rss_mib - first.rss_mib:+.1f} MiB  tasks={last.tasks - first.tasks:+d}"
    )
    print(
        f"{len(views)} targets, {generation} reloads, {scrapes} renders; errors per reason "
        f"{ {r: n for r, n in errors.items() if n} }; failed polls of healthy targets: "
        f"{healthy_failed or 'none'}"
    )


def main() -> None:
    """Start snmpsim and the hostile peers, soak, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "180"))
    )
    parser.add_argument("--interval", type=float, default=3.0)
    args = parser.parse_args()
    # As `hwpoller run` does: no Rust backtrace per decoder panic on stderr.
    os.environ["RUST_BACKTRACE"] = "0"
    raise_open_files_limit()
    setup_logging("warning")
    print(f"soak: {args.seconds:.0f}s, interval {args.interval:.0f}s, 20 healthy + {MIX}")
    with SnmpSim() as sim, PeerProcess(list(MIX), (sim.host, sim.port)) as peers:
        asyncio.run(soak(sim.port, peers.ports, args.seconds, args.interval))


if __name__ == "__main__":
    main()
