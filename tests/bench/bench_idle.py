"""What an idle `hwpoller run` costs: CPU ticks and wake-ups with nothing due (issue 24).

One real `hwpoller run` with one SNMP target (a replay agent) at a 1 h interval and shipped
defaults (notification receiver on, HTTP server on): once the first poll is in, nothing is
due for an hour, so every CPU tick and every wake-up in the window is overhead of the
process itself (timers, poll intervals). Wake-ups are voluntary context switches summed over
all threads (/proc/PID/task/*/status): a thread that blocks and is woken again costs one.
CPU is utime + stime of the process (/proc/PID/stat, in clock ticks).

    .venv/bin/python -m tests.bench.bench_idle [--seconds 30] [--rounds 3] [--no-receiver]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from poller.simulator.replay import ReplayProcess
from poller.simulator.snmpsim import RECORDINGS

CLK_TCK = os.sysconf("SC_CLK_TCK")
UP = re.compile(rb'^hwpoller_up\{device="ups"[^}]*\} 1(?:\.0)?$', re.M)


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A loopback port nobody uses right now (TCP or UDP)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def wakeups(pid: int) -> int:
    """Voluntary context switches of every thread of a process (threads that ended are
    not counted: an idle process starts none)."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            for line in status.read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def threads(pid: int) -> int:
    """Threads of a process."""
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


@dataclass
class Idle:
    """One idle window."""

    seconds: float
    ticks: int
    wakeups: int
    threads: int

    @property
    def ticks_per_30s(self) -> float:
        """CPU ticks per 30 s."""
        return self.ticks / self.seconds * 30

    @property
    def wakeups_per_second(self) -> float:
        """Voluntary context switches per second."""
        return self.wakeups / self.seconds


@dataclass
class Running:
    """A running `hwpoller run` and its ports."""

    proc: subprocess.Popen[bytes]
    http_port: int
    notification_port: int | None


@contextlib.contextmanager
def idle_hwpoller(
    agent_port: int, community: str, receiver: bool = True, extra_env: dict[str, str] | None = None
) -> Iterator[Running]:
    """`hwpoller run` with one target at a 1 h interval, after its first poll and a settling
    second."""
    with tempfile.TemporaryDirectory(prefix="hwpoller-idle-") as tmp:
        http_port = free_port()
        udp_port = free_port(socket.SOCK_DGRAM) if receiver else None
        settings: dict[str, object] = {"interval": "1h"}
        settings["notification_address"] = f"127.0.0.1:{udp_port}" if receiver else None
        doc = {
            "settings": settings,
            "auths": {"sim": {"protocol": "snmp", "version": "2c", "community": community}},
            "targets": [
                {
                    "name": "ups",
                    "address": f"127.0.0.1:{agent_port}",
                    "protocol": "snmp",
                    "auth": "sim",
                }
            ],
        }
        path = Path(tmp) / "hwpoller.yml"
        path.write_text(yaml.safe_dump(doc))
        argv = [sys.executable, "-m", "poller", "run", f"--config.file={path}"]
        proc = subprocess.Popen(
            [*argv, f"--web.listen-address=127.0.0.1:{http_port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(extra_env or {})},
        )
        try:
            wait_first_poll(proc, http_port)
            time.sleep(1.0)  # the start-up's stragglers (engine build thread, first render)
            yield Running(proc, http_port, udp_port)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_first_poll(proc: subprocess.Popen[bytes], port: int, timeout: float = 60.0) -> None:
    """Until /metrics shows the target's first successful poll."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/metrics"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hwpoller run exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as response:
            if UP.search(response.read()):
                return
        time.sleep(0.2)
    raise RuntimeError("hwpoller run did not poll its target")


def measure_idle(pid: int, seconds: float) -> Idle:
    """Ticks and wake-ups of a process over `seconds` of doing nothing here."""
    ticks0, wake0 = cpu_ticks(pid), wakeups(pid)
    time.sleep(seconds)
    return Idle(seconds, cpu_ticks(pid) - ticks0, wakeups(pid) - wake0, threads(pid))


def run(seconds: float, rounds: int, receiver: bool) -> list[Idle]:
    """`rounds` windows of `seconds`, each on a fresh `hwpoller run`."""
    name = "apc-smartups"
    out = []
    with ReplayProcess([RECORDINGS / f"{name}.snmprec"]) as agent:
        for i in range(rounds):
            with idle_hwpoller(agent.port, name, receiver) as running:
                idle = measure_idle(running.proc.pid, seconds)
            out.append(idle)
            print(
                f"  round {i + 1}: {idle.ticks} ticks in {seconds:g} s "
                f"({idle.ticks_per_30s:.1f} per 30 s), {idle.wakeups_per_second:.1f} wake-ups/s, "
                f"{idle.threads} threads"
            )
    return out


def main() -> int:
    """Print idle CPU and wake-ups of `hwpoller run`, receiver on (and off with a flag)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-receiver", action="store_true", help="receiver off as well")
    args = parser.parse_args()
    cases = [True, False] if args.no_receiver else [True]
    for receiver in cases:
        print(
            f"\nidle hwpoller run, one target at 1 h, receiver {'on' if receiver else 'off'} "
            f"({CLK_TCK} ticks/s; goal <= 1 tick per 30 s and <= 1 wake-up/s):"
        )
        got = run(args.seconds, args.rounds, receiver)
        print(
            f"  median: {statistics.median(i.ticks_per_30s for i in got):.1f} ticks per 30 s, "
            f"{statistics.median(i.wakeups_per_second for i in got):.2f} wake-ups/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
