"""Benchmark: hwpoller against Prometheus' snmp_exporter on the same agent and the same data.

For each recording (an APC Smart-UPS and a multi-table environment monitor by default), two
replay agents (poller.simulator.replay, in their own processes) serve it: one for hwpoller,
one for snmp_exporter (Debian's prometheus-snmp-exporter). snmp_exporter gets a module
generated from what hwpoller's detected profiles read: the same scalars as GETs and the same
table entries as walks, every value a metric. Rounds alternate A/B so machine drift cancels.

  A: hwpoller polls the target back to back through the scheduler's poll path and renders
     the target's exposition after each poll (what a scrape needs), on the event loop
     `hwpoller run` uses (uvloop unless --event-loop asyncio); CPU is this process's.
  B: snmp_exporter is scraped back to back (/snmp?target=...&module=...); CPU is the
     exporter process's (/proc/PID/stat).

Printed per round: CPU and wall per device poll for each, their ratio, and PDUs per poll
(counted by each side's agent). `python -m tests.bench.bench_vs_exporters [--rounds N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from poller import loop as event_loop
from poller.driver import DriverContext, PollSpec
from poller.exporter import exposition
from poller.profiles import load_profiles
from poller.scheduler import TargetRunner
from poller.simulator.replay import ReplayProcess
from poller.simulator.snmpsim import RECORDINGS
from poller.snmp.driver import SnmpDriver, _Plan
from poller.store import Store
from tests.util import snmp_config

TICK = os.sysconf("SC_CLK_TCK")
DEFAULT = ["apc-smartups", "apc-emu"]


def free_tcp_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def recording_types(path: Path) -> dict[str, str]:
    """OID -> snmprec type tag (variation suffixes stripped)."""
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split("|", 2)
        if len(parts) == 3:
            out[parts[0].lstrip(".")] = parts[1].split(":")[0]
    return out


def exporter_module(plan: _Plan, community: str, types: dict[str, str]) -> dict[str, object]:
    """An snmp_exporter 0.21 module reading exactly what hwpoller's plan reads."""
    metrics: list[dict[str, object]] = []

    def kind(tag: str) -> str:
        return "DisplayString" if tag.startswith("4") else "gauge"

    for oid in plan.scalars:
        if oid in types and types[oid] != "6":
            base = oid.removesuffix(".0")
            metrics.append(
                {"name": "s_" + base.replace(".", "_"), "oid": base, "type": kind(types[oid])}
            )
    for _entry, columns, _last in plan.tables:
        for column in columns:
            rows = [o for o in types if o.startswith(column + ".")]
            if not rows or types[rows[0]] == "6":
                continue
            arity = len(rows[0][len(column) + 1 :].split("."))
            metrics.append(
                {
                    "name": "c_" + column.replace(".", "_"),
                    "oid": column,
                    "type": kind(types[rows[0]]),
                    "indexes": [{"labelname": f"i{k}", "type": "gauge"} for k in range(arity)],
                }
            )
    return {
        "version": 2,
        "auth": {"community": community},
        "max_repetitions": 25,
        "retries": 0,
        "timeout": "5s",
        "get": list(plan.scalars),
        "walk": [entry for entry, _, _ in plan.tables],
        "metrics": metrics,
    }


@dataclass
class Side:
    """Totals of one side over all rounds."""

    polls: int = 0
    cpu: float = 0.0
    wall: float = 0.0


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def self_cpu() -> float:
    """User + system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def hwpoller_round(runner: TargetRunner, store: Store, polls: int) -> tuple[float, float]:
    """CPU and wall seconds for `polls` back-to-back polls (+ one render each)."""
    cpu0, wall0 = self_cpu(), time.perf_counter()
    for _ in range(polls):
        result = await runner.poll_once()
        if not result.success:
            raise RuntimeError(f"hwpoller poll failed: {result.reason}: {result.message}")
        exposition(store)
    return self_cpu() - cpu0, time.perf_counter() - wall0


Round = Callable[[], tuple[float, float]]


def alternate(
    rounds: int, polls: int, first: tuple[Side, Round], second: tuple[Side, Round]
) -> None:
    """Run the two sides' rounds in turn (A, B, A, B, ...) so that machine drift cancels,
    adding each round's CPU and wall seconds to its Side and printing a line per round."""
    print(
        f"  {'round':>5} {'hwpoller CPU/poll':>18} {'exporter CPU/poll':>18} "
        f"{'ratio':>6} {'hwpoller wall':>14} {'exporter wall':>14}"
    )
    for i in range(rounds):
        (cpu_a, wall_a), (cpu_b, wall_b) = first[1](), second[1]()
        for side, cpu, wall in ((first[0], cpu_a, wall_a), (second[0], cpu_b, wall_b)):
            side.polls += polls
            side.cpu += cpu
            side.wall += wall
        print(
            f"  {i + 1:>5} {cpu_a / polls * 1000:>15.2f} ms "
            f"{cpu_b / polls * 1000:>15.2f} ms "
            f"{cpu_a / cpu_b if cpu_b else float('inf'):>6.2f} "
            f"{wall_a / polls * 1000:>11.2f} ms {wall_b / polls * 1000:>11.2f} ms"
        )


def exporter_round(url: str, pid: int, polls: int) -> tuple[float, float]:
    """CPU (the exporter's) and wall seconds for `polls` back-to-back scrapes."""
    cpu0, wall0 = proc_cpu(pid), time.perf_counter()
    for _ in range(polls):
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
            body = response.read()
        if b"snmp_scrape_duration_seconds" not in body:
            raise RuntimeError("snmp_exporter scrape failed")
    return proc_cpu(pid) - cpu0, time.perf_counter() - wall0


def bench(name: str, rounds: int, polls: int, loop: str = event_loop.DEFAULT) -> None:
    """Run the A/B rounds for one recording and print the table."""
    path = RECORDINGS / f"{name}.snmprec"
    exporter_bin = shutil.which("prometheus-snmp-exporter")
    if exporter_bin is None:
        raise SystemExit("prometheus-snmp-exporter is not installed (make bench installs it)")
    with ReplayProcess([path]) as agent_a, ReplayProcess([path]) as agent_b:
        config = snmp_config(agent_a.port, name, timeout="10s", retries=0)
        target = config.targets[0]
        spec = PollSpec.from_config(config, target)
        context = DriverContext(load_profiles())
        driver = SnmpDriver(spec, context)
        store = Store()
        store.register(target.name, target.protocol, target.labels)
        runner = TargetRunner(spec, dict(target.labels), driver, store, 0, 0)
        event_loop.run(runner.poll_once(), loop)  # detection
        event_loop.run(runner.poll_once(), loop)  # learn table sizes
        plan = _Plan.of(driver.applied)
        module = exporter_module(plan, name, recording_types(path))
        with tempfile.TemporaryDirectory(prefix="hwpoller-bench-") as tmp:
            conf = Path(tmp) / "snmp.yml"
            conf.write_text(yaml.safe_dump({"hwpoller": module}))
            port = free_tcp_port()
            exporter = subprocess.Popen(
                [exporter_bin, f"--config.file={conf}", f"--web.listen-address=127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            url = f"http://127.0.0.1:{port}/snmp?target=127.0.0.1:{agent_b.port}&module=hwpoller"
            try:
                deadline = time.monotonic() + 15
                while True:
                    try:
                        exporter_round(url, exporter.pid, 2)  # warm-up, and up?
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)
                a, b = Side(), Side()
                readings = len(store.get(target.name).last.data.readings)  # type: ignore[union-attr]
                print(
                    f"\n{name} (event loop {loop}): hwpoller profiles "
                    f"{[p.name for p in driver.applied]}, "
                    f"{readings} readings; snmp_exporter module: {len(module['get'])} gets, "
                    f"{len(module['walk'])} walks, {len(module['metrics'])} metrics"
                )
                alternate(
                    rounds,
                    polls,
                    (a, lambda: event_loop.run(hwpoller_round(runner, store, polls), loop)),
                    (b, lambda: exporter_round(url, exporter.pid, polls)),
                )
            finally:
                exporter.terminate()
                exporter.wait(10)
                asyncio.run(driver.close())
                context.shutdown()
    stats_a, stats_b = agent_a.stats, agent_b.stats
    pdus_a = stats_a.get("requests", 0) / (a.polls + 2)
    pdus_b = stats_b.get("requests", 0) / (b.polls + 2)
    print(
        f"  total: hwpoller {a.cpu / a.polls * 1000:.2f} ms CPU, {a.wall / a.polls * 1000:.2f} ms "
        f"wall, {pdus_a:.1f} PDUs per poll; snmp_exporter {b.cpu / b.polls * 1000:.2f} ms CPU, "
        f"{b.wall / b.polls * 1000:.2f} ms wall, {pdus_b:.1f} PDUs per poll; "
        f"CPU ratio {a.cpu / b.cpu if b.cpu else float('inf'):.2f}"
    )


def main() -> int:
    """Benchmark every recording asked for."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recording", nargs="*", default=DEFAULT)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--polls", type=int, default=200, help="polls per side per round")
    parser.add_argument("--event-loop", default=event_loop.DEFAULT, choices=event_loop.EVENT_LOOPS)
    args = parser.parse_args()
    for name in args.recording:
        bench(name, args.rounds, args.polls, args.event_loop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
