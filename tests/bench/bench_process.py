"""Whole-process CPU per poll: `hwpoller run` against snmp_exporter at a steady poll rate.

bench_vs_exporters measures hwpoller's poll path in process, back to back: it does not see
what a running `hwpoller run` spends besides (scheduler timers and jitter, the store, the
render after each poll, logging, the HTTP server, the notification receiver). Here both are
whole processes at the same steady rate against the same replay agent
(poller.simulator.replay, an APC Smart-UPS recording):

  A: a fresh `hwpoller run` with RATE targets at a 1 s interval (RATE polls/s), shipped
     defaults otherwise (jitter, receiver on, info logging), /metrics scraped every 10 s as
     Prometheus would. CPU is utime + stime of the process and its children (/proc).
  B: snmp_exporter (Debian's prometheus-snmp-exporter) scraped RATE times a second, paced,
     with a module reading what hwpoller's profile reads (bench_vs_exporters.exporter_module).
     CPU is the exporter process's.

Rounds alternate A/B so that machine drift cancels; medians are printed. hwpoller's polls
are counted as RATE x seconds (the interval's jitter averages out), and the bench checks at
the end of each window that every target succeeded within the last 1.5 s (no poll missed).

    .venv/bin/python -m tests.bench.bench_process [--rates 10 100] [--rounds 3] [--seconds 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml

from poller import loop as event_loop
from poller.driver import DriverContext, PollSpec
from poller.profiles import load_profiles
from poller.scheduler import TargetRunner
from poller.simulator.replay import ReplayProcess
from poller.simulator.snmpsim import RECORDINGS
from poller.snmp.driver import SnmpDriver, _Plan
from poller.store import Store
from tests.bench.bench_idle import CLK_TCK, free_port, wakeups
from tests.bench.bench_vs_exporters import exporter_module, proc_cpu, recording_types
from tests.util import snmp_config

RECORDING = "apc-smartups"
LAST_SUCCESS = re.compile(rb"^hwpoller_last_success_timestamp_seconds\{[^}]*\} (\S+)$", re.M)
SCRAPE_EVERY = 10.0


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its (direct) children, e.g. an IPMI worker."""
    total = proc_cpu(pid)
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            with contextlib.suppress(OSError):
                total += proc_cpu(int(child))
    return total


def fetch(url: str) -> bytes:
    """GET a loopback URL."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        body: bytes = response.read()
    return body


def module_for(agent_port: int) -> dict[str, object]:
    """An snmp_exporter module reading what hwpoller's detected profile reads."""
    config = snmp_config(agent_port, RECORDING, timeout="10s", retries=0)
    target = config.targets[0]
    spec = PollSpec.from_config(config, target)
    context = DriverContext(load_profiles())
    driver = SnmpDriver(spec, context)
    store = Store()
    store.register(target.name, target.protocol, target.labels)
    runner = TargetRunner(spec, dict(target.labels), driver, store, 0, 0)
    event_loop.run(runner.poll_once())  # detection
    event_loop.run(runner.poll_once())  # table sizes
    event_loop.run(driver.close())
    context.shutdown()
    path = RECORDINGS / f"{RECORDING}.snmprec"
    return exporter_module(_Plan.of(driver.applied), RECORDING, recording_types(path))


@contextlib.contextmanager
def hwpoller_at(
    agent_port: int, rate: int, env: dict[str, str] | None = None, argv: list[str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`hwpoller run` with `rate` targets at 1 s on the agent, once every one has succeeded:
    (process, HTTP port). `argv` replaces `python` (e.g. to run it under cProfile)."""
    with tempfile.TemporaryDirectory(prefix="hwpoller-process-") as tmp:
        http_port = free_port()
        doc = {
            "settings": {
                "interval": "1s",
                "notification_address": f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
            },
            "auths": {"sim": {"protocol": "snmp", "version": "2c", "community": RECORDING}},
            "targets": [
                {
                    "name": f"ups-{k}",
                    "address": f"127.0.0.1:{agent_port}",
                    "protocol": "snmp",
                    "auth": "sim",
                }
                for k in range(rate)
            ],
        }
        path = Path(tmp) / "hwpoller.yml"
        path.write_text(yaml.safe_dump(doc))
        command = [*(argv or [sys.executable]), "-m", "poller", "run", f"--config.file={path}"]
        proc = subprocess.Popen(
            [*command, f"--web.listen-address=127.0.0.1:{http_port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        try:
            deadline = time.monotonic() + 60
            while len(fresh(http_port)) < rate:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("hwpoller run did not poll every target")
                time.sleep(0.3)
            yield proc, http_port
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def fresh(port: int, within: float = 1.5) -> list[float]:
    """Last-success times of the targets that succeeded within `within` seconds."""
    try:
        body = fetch(f"http://127.0.0.1:{port}/metrics")
    except OSError:
        return []
    now = time.time()
    return [t for m in LAST_SUCCESS.finditer(body) if now - (t := float(m.group(1))) <= within]


def hwpoller_round(agent_port: int, rate: int, seconds: float) -> tuple[float, float]:
    """(CPU ms per poll, wake-ups per poll) of a whole `hwpoller run` at `rate` polls/s."""
    with hwpoller_at(agent_port, rate) as (proc, http_port):
        time.sleep(3.0)  # past the start-up burst: every target on its own phase
        cpu0, wake0, t0 = tree_cpu(proc.pid), wakeups(proc.pid), time.monotonic()
        end = t0 + seconds
        next_scrape = t0 + SCRAPE_EVERY / 2
        while (now := time.monotonic()) < end:
            if now >= next_scrape:
                fetch(f"http://127.0.0.1:{http_port}/metrics")
                next_scrape += SCRAPE_EVERY
            time.sleep(min(end, next_scrape) - now)
        cpu, wake = tree_cpu(proc.pid) - cpu0, wakeups(proc.pid) - wake0
        wall = time.monotonic() - t0
        late = rate - len(fresh(http_port))
        if late:
            print(f"    ({late} of {rate} targets had not succeeded in the last 1.5 s)")
    polls = rate * wall
    return cpu / polls * 1000, wake / polls


def exporter_round(url: str, pid: int, rate: int, seconds: float) -> tuple[float, float]:
    """(CPU ms per scrape, wake-ups per scrape) of snmp_exporter scraped `rate` times/s."""
    workers = max(1, min(16, rate // 10))
    done = [0] * workers
    failed: list[BaseException] = []
    t0 = time.monotonic() + 0.2
    total = int(rate * seconds)

    def work(j: int) -> None:
        for k in range(j, total, workers):
            delay = t0 + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                body = fetch(url)
            except OSError as exc:
                failed.append(exc)
                return
            if b"snmp_scrape_duration_seconds" not in body:
                failed.append(RuntimeError("the scrape failed"))
                return
            done[j] += 1

    cpu0, wake0 = proc_cpu(pid), wakeups(pid)
    threads = [threading.Thread(target=work, args=(j,)) for j in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failed:
        raise RuntimeError(f"snmp_exporter: {failed[0]}")
    polls = sum(done)
    return (proc_cpu(pid) - cpu0) / polls * 1000, (wakeups(pid) - wake0) / polls


@contextlib.contextmanager
def snmp_exporter(module: dict[str, object]) -> Iterator[tuple[str, int]]:
    """A running snmp_exporter with the module: (its base URL, pid)."""
    binary = shutil.which("prometheus-snmp-exporter")
    if binary is None:
        raise SystemExit("prometheus-snmp-exporter is not installed (make bench installs it)")
    with tempfile.TemporaryDirectory(prefix="hwpoller-process-") as tmp:
        conf = Path(tmp) / "snmp.yml"
        conf.write_text(yaml.safe_dump({"hwpoller": module}))
        port = free_port()
        proc = subprocess.Popen(
            [binary, f"--config.file={conf}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    fetch(f"http://127.0.0.1:{port}/metrics")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            yield f"http://127.0.0.1:{port}", proc.pid
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> int:
    """A/B rounds at each rate; per-round lines and the medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with ReplayProcess([RECORDINGS / f"{RECORDING}.snmprec"]) as agent:
        module = module_for(agent.port)
        with snmp_exporter(module) as (base, pid):
            url = f"{base}/snmp?target=127.0.0.1:{agent.port}&module=hwpoller"
            exporter_round(url, pid, 10, 1.0)  # warm-up
            for rate in args.rates:
                print(
                    f"\nwhole process, {rate} polls/s, {args.seconds:g} s windows "
                    f"(CPU per poll; goal: hwpoller <= 0.5 x snmp_exporter):"
                )
                print(f"  {'round':>5} {'hwpoller':>12} {'snmp_exporter':>14} {'ratio':>6}")
                ratios, cpu_a, cpu_b = [], [], []
                for i in range(args.rounds):
                    a, _ = hwpoller_round(agent.port, rate, args.seconds)
                    b, _ = exporter_round(url, pid, rate, args.seconds)
                    cpu_a.append(a)
                    cpu_b.append(b)
                    ratios.append(a / b if b else float("inf"))
                    print(f"  {i + 1:>5} {a:>9.3f} ms {b:>11.3f} ms {ratios[-1]:>6.2f}")
                print(
                    f"  median: hwpoller {statistics.median(cpu_a):.3f} ms, snmp_exporter "
                    f"{statistics.median(cpu_b):.3f} ms per poll, ratio "
                    f"{statistics.median(ratios):.2f} ({CLK_TCK} ticks/s)"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
