"""Scale benchmark: one real `hwpoller run` polling thousands of SNMP devices and BMCs.

The SNMP devices are replay agents (poller.simulator.replay, one device per UDP port, APC
Smart-UPS, Liebert CRAC and NetBotz recordings mixed) in 1-2 processes; the BMCs are the
project's pure-Python RMCP+ BMCs (poller.simulator.ipmi_bmc), many per process, each on its
own UDP port. hwpoller runs as its own process with a generated config; this process only
scrapes /metrics every 10 s and reads /proc, so hwpoller's figures are its own. With the
default settings.ipmi_process, hwpoller's IPMI polls run in a worker process (a child of
hwpoller running poller.ipmi.worker): its figures are reported beside the main process's and
the issue's targets (1 core, 512 MiB) are checked against the sum of both.

    .venv/bin/python -m tests.bench.bench_scale                      # 5,000 SNMP + 1,000 BMCs
    .venv/bin/python -m tests.bench.bench_scale --snmp 200 --bmcs 20 --seconds 40   # smoke

Freshness: at every check each target's hwpoller_last_success_timestamp_seconds must be
within one interval of now. With the default ±10 % jitter a healthy target is up to
interval x 1.1 + poll time old just before its next poll, so the checks also count targets
older than that ("late"): those mean the poller is falling behind, not jitter.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from poller.app import raise_open_files_limit
from poller.simulator.replay import ReplayProcess

ROOT = Path(__file__).resolve().parents[2]
SNMPREC = ROOT / "poller" / "simulator" / "snmprec"
# Mixed device kinds, one per port in turn; each recording's community is its file name.
RECORDINGS = ("apc-smartups", "liebert-crac", "netbotz")
BMC_USER = "monitor"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TIMESTAMP = re.compile(
    rb'^hwpoller_last_success_timestamp_seconds\{device="([^"]*)".* (\S+)$', re.M
)
DOWN = re.compile(rb"^hwpoller_up\{.*\} 0(?:\.0)?$", re.M)
TARGETS = {"cpu_cores": 1.0, "rss_mib": 512.0}


# --- the BMC farm: many simulated BMCs in one process ------------------------------------


async def _serve_bmcs(count: int, host: str, first_port: int) -> None:
    """Serve `count` simulated BMCs on consecutive ports until SIGTERM; print one JSON line
    when every port is bound."""
    from poller.simulator.ipmi_bmc import start_bmc
    from poller.simulator.model import RoomModel, Server

    raise_open_files_limit()  # one socket per BMC
    servers = [
        Server(f"srv-{i}", "AB"[i % 2], ("dell", "supermicro")[i % 2], 0.5 + i % 5 * 0.3, 0.5)
        for i in range(count)
    ]
    # No scenario clock: readings stay at the model's initial values, which is all a load
    # test needs (the RMCP+ and SDR work per request is the same).
    model = RoomModel(servers, [])
    transports = []
    for k, server in enumerate(servers):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, first_port + k))
        _, transport = await start_bmc(model, server, sock)
        transports.append(transport)
    print(json.dumps({"ports": [first_port, first_port + count - 1]}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for transport in transports:
        transport.close()


class BmcFarm:
    """The BMC farm in a subprocess (own process group, so it is killed as a whole)."""

    def __init__(self, count: int, host: str, first_port: int) -> None:
        self.count, self.first_port = count, first_port
        self._argv = [sys.executable, "-m", "tests.bench.bench_scale", "--serve-bmcs"]
        self._argv += [str(count), "--host", host, "--first-port", str(first_port)]
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the farm and wait for its ready line."""
        self.proc = subprocess.Popen(
            self._argv, stdout=subprocess.PIPE, text=True, start_new_session=True, cwd=ROOT
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready or not self.proc.stdout.readline():
            raise RuntimeError(f"BMC farm on ports {self.first_port}+ did not start")

    def stop(self) -> None:
        """Kill the farm's process group."""
        _kill_group(self.proc)


def _kill_group(proc: subprocess.Popen[str] | None) -> None:
    """SIGTERM a child's process group, SIGKILL it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


# --- /proc ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_queue_wait(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a CPU (schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine spent busy since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def ipmi_worker(pid: int) -> int | None:
    """The IPMI worker process of hwpoller `pid` (its child running poller.ipmi.worker)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"poller.ipmi.worker" in (entry / "cmdline").read_bytes():
                return int(entry.name)
    return None


def status(pid: int) -> dict[str, int]:
    """VmRSS (KiB), Threads and open fds of a process."""
    out = {"fds": len(os.listdir(f"/proc/{pid}/fd"))}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    return out


# --- config -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What to start and how hwpoller is configured."""

    snmp: int
    bmcs: int
    interval: float
    snmp_first_port: int
    bmc_first_port: int
    snmp_procs: int
    bmc_procs: int
    snmp_concurrency: int
    ipmi_threads: int
    ipmi_process: bool = True
    host: str = "127.0.0.1"

    def settings(self, listen: str) -> dict[str, object]:
        """The `settings:` section; everything not named here is the default."""
        return {
            "listen_address": listen,
            "notification_address": None,  # no trap receiver: port 9162 may be in use
            "interval": f"{self.interval:g}s",
            "snmp_concurrency": self.snmp_concurrency,
            "ipmi_threads": self.ipmi_threads,
            "log_level": "warning",
        } | ({} if self.ipmi_process else {"ipmi_process": False})

    def config(self, listen: str, password: str) -> dict[str, object]:
        """The whole generated config: one community per recording, one IPMI auth."""
        auths: dict[str, object] = {
            name: {"protocol": "snmp", "version": "2c", "community": name} for name in RECORDINGS
        }
        auths["bmc"] = {
            "protocol": "ipmi",
            "username": BMC_USER,
            "password": password,
            "privilege": "user",
        }
        targets = [
            {
                "name": f"{RECORDINGS[i % len(RECORDINGS)]}-{i}",
                "address": f"{self.host}:{self.snmp_first_port + i}",
                "protocol": "snmp",
                "auth": RECORDINGS[i % len(RECORDINGS)],
                "labels": {"site": "bench", "rack": f"r{i // 40}"},
            }
            for i in range(self.snmp)
        ]
        targets += [
            {
                "name": f"bmc-{i}",
                "address": f"{self.host}:{self.bmc_first_port + i}",
                "protocol": "ipmi",
                "auth": "bmc",
                "labels": {"site": "bench", "rack": f"r{i // 20}"},
            }
            for i in range(self.bmcs)
        ]
        return {"settings": self.settings(listen), "auths": auths, "targets": targets}


def _split(total: int, parts: int) -> list[int]:
    """`total` as `parts` near-equal positive counts."""
    parts = max(1, min(parts, total))
    return [total // parts + (k < total % parts) for k in range(parts)]


def _free_tcp_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_ports_free(host: str, first: int, count: int, what: str) -> None:
    """Fail early, with the port, when a planned UDP port is taken by someone else."""
    for port in range(first, first + count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise SystemExit(f"{what}: UDP port {port} is in use ({exc.strerror})") from None


# --- checks -----------------------------------------------------------------------------


@dataclass
class Check:
    """One scrape of /metrics."""

    at: float  # seconds since the window opened
    seconds: float
    size: int
    stale: int  # older than one interval
    late: int  # older than interval x (1 + jitter) + POLL_SLACK
    never: int  # no success yet
    down: int  # hwpoller_up 0
    oldest: float  # age of the oldest success, seconds
    missing: int  # configured but absent from the exposition
    scrape_cpu: float  # hwpoller CPU seconds while the scrape ran
    polled: int = 0  # targets with a newer success than at the previous check
    # per protocol: (fresh: last success within one interval, configured)
    fresh: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass
class Window:
    """What the measured window saw."""

    checks: list[Check] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0
    wait: float = 0.0  # run-queue wait of hwpoller's threads, seconds
    agent_cpu: dict[str, float] = field(default_factory=dict)
    machine_busy: float = 0.0  # CPU seconds the whole machine was busy (/proc/stat)
    start: dict[str, int] = field(default_factory=dict)
    end: dict[str, int] = field(default_factory=dict)
    peak_rss: int = 0
    load_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    never_at_end: list[str] = field(default_factory=list)
    all_up_after: float | None = None  # s from /metrics answering to every target up once
    stale_at_end: list[str] = field(default_factory=list)
    # The IPMI worker process (settings.ipmi_process): pid at the window's start and end.
    worker_pids: tuple[int | None, int | None] = (None, None)
    worker_cpu: float = 0.0
    worker_wait: float = 0.0
    worker_start: dict[str, int] = field(default_factory=dict)
    worker_end: dict[str, int] = field(default_factory=dict)
    worker_peak_rss: int = 0
    peak_rss_sum: int = 0  # highest main + worker RSS seen at one check

    @property
    def total_cpu(self) -> float:
        """CPU seconds of hwpoller and its IPMI worker over the window."""
        return self.cpu + self.worker_cpu


POLL_SLACK = 3.0  # seconds of poll wall time allowed on top of interval x (1 + jitter)
JITTER = 0.1  # settings.jitter default


def scrape(url: str, names: set[str], interval: float, pid: int) -> tuple[Check, dict[str, float]]:
    """Fetch /metrics once and judge every target's freshness."""
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - our own http URL
        body = response.read()
    seconds, cpu = time.monotonic() - t0, cpu_seconds(pid) - cpu0
    now = time.time()
    seen = {m.group(1).decode(): float(m.group(2)) for m in TIMESTAMP.finditer(body)}
    ages = {name: now - ts for name, ts in seen.items() if ts > 0}
    check = Check(
        at=0.0,
        seconds=seconds,
        size=len(body),
        stale=sum(age > interval for age in ages.values()),
        late=sum(age > interval * (1 + JITTER) + POLL_SLACK for age in ages.values()),
        never=sum(1 for name in names if seen.get(name, 1.0) == 0.0),
        down=len(DOWN.findall(body)),
        oldest=max(ages.values(), default=0.0),
        missing=len(names - seen.keys()),
        scrape_cpu=cpu,
    )
    for protocol in ("snmp", "ipmi"):
        mine = [n for n in names if _protocol(n) == protocol]
        if mine:
            fresh = sum(1 for n in mine if n in ages and ages[n] <= interval)
            check.fresh[protocol] = (fresh, len(mine))
    return check, {name: seen.get(name, 0.0) for name in names}


def _protocol(name: str) -> str:
    return "ipmi" if name.startswith("bmc-") else "snmp"


def wait_ready(url: str, proc: subprocess.Popen[str], timeout: float) -> float:
    """Seconds until /metrics first answers."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"hwpoller exited with {proc.returncode} before serving")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
                response.read()
            return time.monotonic() - t0
        time.sleep(0.5)
    raise TimeoutError(f"hwpoller did not serve {url} within {timeout:.0f} s")


def measure(
    url: str,
    proc: subprocess.Popen[str],
    names: set[str],
    agents: dict[str, int],
    interval: float,
    warmup: float,
    seconds: float,
    max_warmup: float,
) -> Window:
    """Warm up for `warmup` s and then until every target has succeeded once (at most
    `max_warmup` s in all); then check freshness every 10 s for `seconds`, with /proc
    figures. Targets that failed in the start-up burst sit in backoff (up to 5 min), so a
    fixed warm-up would measure the start, not the steady state."""
    pid = proc.pid
    out = Window()
    t_start = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"hwpoller exited with {proc.returncode} during warm-up")
        time.sleep(10)
        elapsed = time.monotonic() - t_start
        if elapsed < warmup:
            continue
        check, _ = scrape(url, names, interval, pid)
        never = check.never + check.missing
        print(f"  warm-up {elapsed:4.0f}s: {never} targets not up yet", flush=True)
        if never == 0:
            out.all_up_after = elapsed
            break
        if elapsed >= max_warmup:
            print(f"  warm-up ends at {max_warmup:g} s with {never} targets never up")
            break
    out.load_start = os.getloadavg()
    out.start = status(pid)
    wait0 = run_queue_wait(pid)
    worker = ipmi_worker(pid)
    worker_cpu0 = worker_wait0 = 0.0
    if worker is not None:
        out.worker_start = status(worker)
        worker_cpu0, worker_wait0 = cpu_seconds(worker), run_queue_wait(worker)
    cpu0, agents0, busy0, t0 = (
        cpu_seconds(pid),
        {k: cpu_seconds(p) for k, p in agents.items()},
        machine_busy_seconds(),
        time.monotonic(),
    )
    last: dict[str, float] = {}
    step = 0
    while True:
        at = time.monotonic() - t0
        previous = last
        check, last = scrape(url, names, interval, pid)
        check.at = at
        if previous:
            check.polled = sum(ts > previous.get(name, 0.0) for name, ts in last.items())
        out.checks.append(check)
        rss = status(pid)["VmRSS"]
        out.peak_rss = max(out.peak_rss, rss)
        with contextlib.suppress(OSError):
            if worker is not None:
                worker_rss = status(worker)["VmRSS"]
                out.worker_peak_rss = max(out.worker_peak_rss, worker_rss)
                rss += worker_rss
        out.peak_rss_sum = max(out.peak_rss_sum, rss)
        fresh = "  ".join(f"{k} {f}/{n}" for k, (f, n) in check.fresh.items())
        print(
            f"  t={check.at:5.0f}s scrape {check.seconds:5.2f}s {check.size / 1e6:5.1f} MB  "
            f"fresh {fresh}  oldest {check.oldest:4.0f}s  late {check.late:5d}  "
            f"down {check.down:5d}  never {check.never:5d}",
            flush=True,
        )
        step += 1
        if step * 10 > seconds:
            break
        time.sleep(max(0.0, t0 + step * 10 - time.monotonic()))
        if proc.poll() is not None:
            raise RuntimeError(f"hwpoller exited with {proc.returncode} during the window")
    out.wall = time.monotonic() - t0
    out.cpu = cpu_seconds(pid) - cpu0
    out.wait = run_queue_wait(pid) - wait0
    out.agent_cpu = {k: cpu_seconds(p) - agents0[k] for k, p in agents.items()}
    out.machine_busy = machine_busy_seconds() - busy0
    out.end = status(pid)
    out.load_end = os.getloadavg()
    end_worker = ipmi_worker(pid)
    out.worker_pids = (worker, end_worker)
    if worker is not None and worker == end_worker:
        out.worker_cpu = cpu_seconds(worker) - worker_cpu0
        out.worker_wait = run_queue_wait(worker) - worker_wait0
        out.worker_end = status(worker)
    elif end_worker is not None:  # restarted during the window: its own figures only
        out.worker_cpu = cpu_seconds(end_worker)
        out.worker_end = status(end_worker)
    now = time.time()
    out.never_at_end = sorted(n for n, ts in last.items() if ts == 0)
    out.stale_at_end = sorted(n for n, ts in last.items() if ts and now - ts > interval)
    return out


# --- report -----------------------------------------------------------------------------


def report(plan: Plan, window: Window, ready: float, log_path: Path) -> bool:
    """Print the figures table; True when every target of the issue is met."""
    checks = window.checks
    main_core = window.cpu / window.wall
    core = window.total_cpu / window.wall
    rss0, rss1 = window.start["VmRSS"] / 1024, window.end["VmRSS"] / 1024
    peak = window.peak_rss / 1024
    w0 = window.worker_start.get("VmRSS", 0) / 1024
    w1 = window.worker_end.get("VmRSS", 0) / 1024
    rss_sum1 = rss1 + w1
    rss_sum_peak = max(rss_sum1, window.peak_rss_sum / 1024)
    never = window.never_at_end
    worst_stale = max(c.stale for c in checks)
    worst_late = max(c.late for c in checks)
    scrape_s = [c.seconds for c in checks]
    scrape_cpu = sum(c.scrape_cpu for c in checks)
    fresh = all(c.stale == 0 and c.never == 0 and c.missing == 0 for c in checks)
    behind = all(c.late == 0 and c.never == 0 and c.missing == 0 for c in checks)
    agent_cpu = ", ".join(f"{k} {v / window.wall:.2f}" for k, v in window.agent_cpu.items())

    def row(name: str, value: str, target: str = "", ok: bool | None = None) -> None:
        verdict = "" if ok is None else ("ok" if ok else "MISSED")
        print(f"  {name:<34} {value:<40} {target:<12} {verdict}")

    print()
    print(
        f"Scale bench: one hwpoller process, {plan.snmp} SNMP devices (replay agents: "
        f"{', '.join(RECORDINGS)}) + {plan.bmcs} BMCs (pure-Python RMCP+ simulator), "
        f"interval {plan.interval:g} s"
    )
    print(
        f"  settings: {json.dumps(plan.settings('...'))} "
        "(timeout, retries, jitter, max_repetitions: defaults)"
    )
    up = "never" if window.all_up_after is None else f"{window.all_up_after:.0f} s later"
    print(
        f"  {len(checks)} checks over {window.wall:.0f} s after warm-up; "
        f"/metrics first answered {ready:.1f} s after start, every target up once: {up}"
    )
    load0, load1 = window.load_start, window.load_end
    print(
        f"  load average (1/5/15 min) start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
        f"end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} on {os.cpu_count()} cores"
    )
    print(f"  {'figure':<34} {'value':<40} {'target':<12}")
    worker = window.worker_pids
    if worker[0] is not None or worker[1] is not None:
        restarted = (
            "" if worker[0] == worker[1] else f" (RESTARTED: pid {worker[0]} -> {worker[1]})"
        )
        row(
            "CPU, hwpoller + IPMI worker",
            f"{core:.2f} of one core = {main_core:.2f} + {window.worker_cpu / window.wall:.2f}"
            + restarted,
            "<= 1 core",
            core <= TARGETS["cpu_cores"],
        )
        row(
            "RSS, hwpoller + IPMI worker",
            f"{rss0 + w0:.0f} MiB -> {rss_sum1:.0f} MiB (peak seen {rss_sum_peak:.0f})",
            "<= 512 MiB",
            rss_sum_peak <= TARGETS["rss_mib"],
        )
    else:
        row("hwpoller CPU", f"{core:.2f} of one core", "<= 1 core", core <= TARGETS["cpu_cores"])
    row(
        "  hwpoller (main) CPU while scraping",
        f"{scrape_cpu:.1f} s of {window.cpu:.1f} s CPU ({len(checks)} scrapes)",
    )
    row(
        "hwpoller (main) RSS",
        f"{rss0:.0f} MiB -> {rss1:.0f} MiB (peak seen {peak:.0f})",
        "<= 512 MiB" if worker == (None, None) else "",
        max(rss1, peak) <= TARGETS["rss_mib"] if worker == (None, None) else None,
    )
    if window.worker_end:
        row(
            "IPMI worker RSS",
            f"{w0:.0f} MiB -> {w1:.0f} MiB (peak seen {window.worker_peak_rss / 1024:.0f})",
        )
        row(
            "IPMI worker fds, threads",
            f"{window.worker_start.get('fds', 0)} -> {window.worker_end['fds']}, "
            f"{window.worker_start.get('Threads', 0)} -> {window.worker_end['Threads']}",
        )
        row(
            "  IPMI worker run-queue wait",
            f"{window.worker_wait / window.wall:.2f} s per s",
        )
    polled = sum(c.polled for c in checks)
    span = checks[-1].at - checks[0].at
    needed = (plan.snmp + plan.bmcs) / plan.interval
    row(
        "  run-queue wait (CPU starvation)",
        f"{window.wait / window.wall:.2f} s per s (threads runnable, no CPU free)",
    )
    if polled and span > 0:
        per_poll = (window.total_cpu - scrape_cpu) / (polled * window.wall / span)
        row(
            "successful polls in the window",
            f"{polled / span:.0f}/s (all targets fresh needs {needed:.0f}/s)",
        )
        row(
            "  CPU per successful poll",
            f"{per_poll * 1000:.1f} ms => {per_poll * needed:.2f} cores for all",
            "",
        )
    row("hwpoller (main) fds", f"{window.start['fds']} -> {window.end['fds']}")
    row("hwpoller (main) threads", f"{window.start['Threads']} -> {window.end['Threads']}")
    for protocol in checks[-1].fresh:
        shares = [c.fresh[protocol][0] / c.fresh[protocol][1] for c in checks]
        total = checks[-1].fresh[protocol][1]
        row(
            f"fresh {protocol} (<= {plan.interval:g} s old)",
            f"last {checks[-1].fresh[protocol][0]}/{total}, "
            f"mean {100 * sum(shares) / len(shares):.1f} %, worst {100 * min(shares):.1f} %",
            "all",
            min(shares) == 1.0,
        )
    row(
        f"stale targets (> {plan.interval:g} s) per check",
        f"max {worst_stale}, mean {sum(c.stale for c in checks) / len(checks):.1f}",
        "0",
        fresh,
    )
    row(
        f"late (> {plan.interval * (1 + JITTER) + POLL_SLACK:g} s) per check",
        f"max {worst_late}, mean {sum(c.late for c in checks) / len(checks):.1f}",
        "0",
        behind,
    )
    row("oldest success seen (any check)", f"{max(c.oldest for c in checks):.0f} s")
    row("targets down per check", f"max {max(c.down for c in checks)}")
    row("targets never up (last check)", f"{len(never)}", "0", not never)
    row(
        "/metrics scrape",
        f"{min(scrape_s):.2f}-{max(scrape_s):.2f} s, {checks[-1].size / 1e6:.1f} MB",
    )
    row("agents' CPU (cores)", agent_cpu)
    busy = window.machine_busy / window.wall
    row("whole machine busy (cores)", f"{busy:.2f} of {os.cpu_count()}")
    if never:
        kinds: dict[str, int] = {}
        for name in never:
            kind = name.rsplit("-", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        print(f"  never up by kind: {kinds}; e.g. {', '.join(never[:5])}")
    if window.stale_at_end:
        print(f"  stale at the last check, e.g.: {', '.join(window.stale_at_end[:5])}")
    print(f"  hwpoller log (warnings and errors): {log_path}")
    for line in limiting_factors(plan, window):
        print(f"  limit: {line}")
    return core <= TARGETS["cpu_cores"] and rss_sum_peak <= TARGETS["rss_mib"] and fresh


def limiting_factors(plan: Plan, window: Window) -> list[str]:
    """What held the figures back, judged from the measurements (most binding first)."""
    out = []
    cores = os.cpu_count() or 1
    busy = window.machine_busy / window.wall
    core = window.total_cpu / window.wall
    agents = sum(window.agent_cpu.values()) / window.wall
    wait = (window.wait + window.worker_wait) / window.wall
    checks = window.checks
    if busy > 0.9 * cores:
        out.append(
            f"the machine is saturated: {busy:.2f} of {cores} cores busy: hwpoller "
            f"{core:.2f}, the simulators {agents:.2f}, other processes "
            f"{max(0.0, busy - core - agents):.2f}; hwpoller's threads waited {wait:.2f} s "
            "per s for a CPU, so late polls here are not the poller's own limit (run the "
            "simulators on another host, on an otherwise idle one, to separate them)"
        )
    if core > TARGETS["cpu_cores"]:
        out.append(f"hwpoller CPU {core:.2f} cores > {TARGETS['cpu_cores']:g}")
    worker_rss = window.worker_end.get("VmRSS", 0)
    rss = max(window.end["VmRSS"] + worker_rss, window.peak_rss_sum, window.peak_rss) / 1024
    if rss > TARGETS["rss_mib"]:
        out.append(
            f"hwpoller RSS (with its IPMI worker) {rss:.0f} MiB > {TARGETS['rss_mib']:g} MiB"
        )
    for protocol in checks[-1].fresh:
        worst = min(c.fresh[protocol][0] / c.fresh[protocol][1] for c in checks)
        if worst < 1.0:
            out.append(
                f"{protocol}: at worst {100 * (1 - worst):.1f} % of targets were older than one "
                f"interval (with the default jitter of ±{JITTER:.0%} about "
                f"{100 * JITTER / 4:.1f} % are, just before their next poll)"
            )
    if window.never_at_end:
        out.append(f"{len(window.never_at_end)} targets never succeeded (see the log)")
    if not out:
        out.append("none reached: every figure is within the issue's targets")
    return out


# --- memory per target ------------------------------------------------------------------

# tracemalloc groups, by the file that allocated: first match wins.
MEMORY_GROUPS = (
    ("exporter cache (rendered text, label prefixes)", "poller/exporter.py"),
    ("store (TargetView, PollResult)", "poller/store.py"),
    ("SNMP driver (transport state, raw values)", "poller/snmp/"),
    ("IPMI driver (SDR cache, readings)", "poller/ipmi/"),
    ("pyghmi sessions", "pyghmi/"),
    ("gufo-snmp (Python side)", "gufo/"),
    ("readings and results (model)", "poller/model.py"),
    ("scheduler (runners, tasks)", "poller/scheduler.py"),
    ("asyncio (tasks, futures, handles)", "asyncio/"),
    ("threads and executor", "threading.py"),
    ("threads and executor", "concurrent/"),
    ("config and profiles", "poller/config"),
    ("config and profiles", "poller/profiles.py"),
    ("config and profiles", "pydantic"),
)


def _proc_status_kib(keys: tuple[str, ...] = ("VmRSS", "RssAnon", "RssFile")) -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            out[key] = int(value.split()[0])
    return out


def _thread_stacks_kib() -> tuple[int, int]:
    """(count, resident KiB) of the 8 MiB anonymous mappings glibc gives each thread stack."""
    count = rss = 0
    size = 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "Size":
            size = int(value.split()[0])
        elif key == "Rss" and size in (8192, 8196):
            count, rss = count + 1, rss + int(value.split()[0])
    return count, rss


async def _memory_child(config_path: str, settle: float, trace: bool) -> dict[str, object]:
    """In a fresh process: poll every target of the config until each has succeeded and
    `settle` more seconds have passed, render /metrics once, and account for the memory."""
    import gc
    import threading
    import tracemalloc

    import poller.ipmi.driver
    import poller.snmp.driver  # noqa: F401 - imported before the baseline, not per target
    from poller.app import load_all
    from poller.exporter import exposition
    from poller.scheduler import Scheduler
    from poller.store import Store

    config, profiles = load_all(config_path)
    names = [t.name for t in config.targets]
    store = Store()
    exposition(store)
    gc.collect()
    base = _proc_status_kib()
    if trace:
        tracemalloc.start(1)
    scheduler = Scheduler(config, profiles, store)
    await scheduler.start()
    t0 = time.monotonic()
    all_up_at = None
    while time.monotonic() - t0 < 600:
        await asyncio.sleep(1)
        views = [store.get(n) for n in names]
        if all_up_at is None and all(v is not None and v.last_success_at for v in views):
            all_up_at = time.monotonic() - t0
        if all_up_at is not None and time.monotonic() - t0 > all_up_at + settle:
            break
    # The exporter's per-target cache stays; the scrape body itself is transient.
    size = len(exposition(store))
    gc.collect()
    end = _proc_status_kib()
    out: dict[str, object] = {
        "targets": len(names),
        "up": sum(1 for n in names if (v := store.get(n)) is not None and v.up),
        "all_up_after_s": all_up_at,
        "base_kib": base,
        "end_kib": end,
        "threads": threading.active_count(),
        "thread_stacks": _thread_stacks_kib(),
        "fds": len(os.listdir("/proc/self/fd")),
        "exposition_bytes": size,
    }
    worker = ipmi_worker(os.getpid())
    if worker is not None:
        out["worker"] = status(worker)
    if trace:
        snapshot = tracemalloc.take_snapshot()
        overhead = tracemalloc.get_tracemalloc_memory()
        traced = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        groups: dict[str, int] = {}
        for stat in snapshot.statistics("filename"):
            filename = stat.traceback[0].filename
            group = next((g for g, part in MEMORY_GROUPS if part in filename), "other Python")
            groups[group] = groups.get(group, 0) + stat.size
        lines = []
        for st in snapshot.statistics("lineno")[:20]:
            frame = st.traceback[0]
            where = "/".join(Path(frame.filename).parts[-2:])
            lines.append((f"{where}:{frame.lineno}", st.size))
        out |= {
            "traced_bytes": traced,
            "tracemalloc_overhead_bytes": overhead,
            "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
            "top_lines": lines,
        }
    await scheduler.stop()
    return out


def run_memory(args: argparse.Namespace) -> int:
    """Start the simulators, then poll them from a fresh subprocess that reports memory."""
    from poller.simulator.ipmi_bmc import USERS

    raise_open_files_limit()
    plan = _plan(args)
    tmp = Path(tempfile.mkdtemp(prefix="hwpoller-scale-mem-"))
    with _simulators(plan) as _agents:
        config = plan.config(f"127.0.0.1:{_free_tcp_port('127.0.0.1')}", USERS[BMC_USER][0])
        config_path = tmp / "hwpoller.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        config_path.chmod(0o600)
        argv = [sys.executable, "-m", "tests.bench.bench_scale", "--memory-child"]
        argv += [str(config_path), "--settle", str(args.settle)]
        argv += ["--trace"] if args.trace else []
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        print(proc.stderr[-4000:], file=sys.stderr)
        return 1
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    n = got["targets"]
    base, end = got["base_kib"], got["end_kib"]
    overhead = got.get("tracemalloc_overhead_bytes", 0) / 1024
    rss = end["VmRSS"] - base["VmRSS"] - overhead
    anon = end["RssAnon"] - base["RssAnon"] - overhead
    print(
        f"memory: {plan.snmp} SNMP + {plan.bmcs} BMC targets, {got['up']}/{n} up "
        f"(all up after {got['all_up_after_s']} s, then {args.settle:g} s more); "
        f"threads {got['threads']}, fds {got['fds']}, "
        f"/metrics {got['exposition_bytes'] / 1e6:.1f} MB"
    )
    print(
        f"  RSS {base['VmRSS'] / 1024:.0f} MiB before the targets -> {end['VmRSS'] / 1024:.0f} "
        f"MiB; growth {rss / 1024:.1f} MiB = {rss / n:.1f} KiB per target "
        f"(anonymous {anon / n:.1f} KiB){' net of tracemalloc' if overhead else ''}"
    )
    if "worker" in got:
        w = got["worker"]
        print(
            f"  IPMI worker process (not in the figures above): RSS {w['VmRSS'] / 1024:.0f} MiB "
            f"= {w['VmRSS'] / max(1, plan.bmcs):.1f} KiB per BMC, threads {w['Threads']}, "
            f"fds {w['fds']}"
        )
    stacks, stacks_kib = got["thread_stacks"]
    print(
        f"  thread stacks: {stacks} x 8 MiB virtual, {stacks_kib / 1024:.1f} MiB resident "
        f"({stacks_kib / n:.1f} KiB per target)"
    )
    if "groups" in got:
        traced = got["traced_bytes"] / 1024
        print(
            f"  Python heap traced: {traced / 1024:.1f} MiB = {traced / n:.1f} KiB per target; "
            f"the rest of the growth ({(anon - traced) / n:.1f} KiB per target) is native: "
            "gufo-snmp's Rust side, OpenSSL, thread stacks, allocator slack"
        )
        for group, size in got["groups"].items():
            print(f"    {group:<48} {size / 1024 / n:7.2f} KiB per target")
        print("  top allocation sites:")
        for where, size in got["top_lines"]:
            print(f"    {where:<40} {size / 1024 / n:7.2f} KiB per target")
    return 0


# --- main -------------------------------------------------------------------------------


def _timeout(signum: int, frame: object) -> None:
    raise TimeoutError("scale bench hit its hard timeout")


def _plan(args: argparse.Namespace) -> Plan:
    plan = Plan(
        snmp=args.snmp,
        bmcs=args.bmcs,
        interval=args.interval,
        snmp_first_port=args.snmp_first_port,
        bmc_first_port=args.bmc_first_port,
        snmp_procs=args.snmp_procs,
        bmc_procs=args.bmc_procs,
        snmp_concurrency=args.snmp_concurrency,
        ipmi_threads=args.ipmi_threads,
        ipmi_process=not args.ipmi_in_process,
    )
    if plan.snmp and plan.bmcs and plan.snmp_first_port + plan.snmp > plan.bmc_first_port:
        raise SystemExit("the SNMP ports would run into the BMC ports: raise --bmc-first-port")
    _check_ports_free(plan.host, plan.snmp_first_port, plan.snmp, "SNMP agents")
    _check_ports_free(plan.host, plan.bmc_first_port, plan.bmcs, "BMC farm")
    return plan


@contextlib.contextmanager
def _simulators(plan: Plan) -> Iterator[dict[str, int]]:
    """Start the replay agents and BMC farms; yield their pids by name; stop them."""
    replays: list[ReplayProcess] = []
    farms: list[BmcFarm] = []
    try:
        t0 = time.monotonic()
        port = plan.snmp_first_port
        recordings = [SNMPREC / f"{name}.snmprec" for name in RECORDINGS]
        for count in _split(plan.snmp, plan.snmp_procs) if plan.snmp else []:
            # Each process cycles through the recordings from its first port: keep the
            # cycle aligned with the target names by starting it on a multiple of 3.
            offset = (port - plan.snmp_first_port) % len(RECORDINGS)
            files = recordings[offset:] + recordings[:offset]
            replay = ReplayProcess(files, ports=count, per_port=True, first_port=port)
            replays.append(replay)
            replay.start(timeout=120)
            port += count
        port = plan.bmc_first_port
        for count in _split(plan.bmcs, plan.bmc_procs) if plan.bmcs else []:
            farm = BmcFarm(count, plan.host, port)
            farms.append(farm)
            farm.start()
            port += count
        print(f"simulators up in {time.monotonic() - t0:.1f} s", flush=True)
        agents = {f"replay-{k}": r._proc.pid for k, r in enumerate(replays) if r._proc}
        agents |= {f"bmc-farm-{k}": f.proc.pid for k, f in enumerate(farms) if f.proc}
        yield agents
    finally:
        for farm in farms:
            farm.stop()
        for replay in replays:
            replay.stop()


def run(args: argparse.Namespace) -> int:
    """Start the agents, the BMC farm and hwpoller; measure; stop everything."""
    from poller.simulator.ipmi_bmc import USERS

    raise_open_files_limit()
    plan = _plan(args)
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(int(args.hard_timeout))
    poller: subprocess.Popen[str] | None = None
    tmp = Path(tempfile.mkdtemp(prefix="hwpoller-scale-"))
    log_path = tmp / "hwpoller.log"
    try:
        with _simulators(plan) as agents:
            listen = f"127.0.0.1:{_free_tcp_port('127.0.0.1')}"
            config = plan.config(listen, USERS[BMC_USER][0])
            config_path = tmp / "hwpoller.yml"
            config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
            config_path.chmod(0o600)  # it holds the BMC password
            with log_path.open("w") as log:
                poller = subprocess.Popen(
                    [str(Path(sys.executable).parent / "hwpoller"), "run", "--config.file",
                     str(config_path), "--web.listen-address", listen],
                    stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                )  # fmt: skip
            try:
                url = f"http://{listen}/metrics"
                ready = wait_ready(url, poller, 120)
                names = {str(t["name"]) for t in config["targets"]}  # type: ignore[attr-defined]
                print(f"hwpoller serving after {ready:.1f} s; warm-up {args.warmup:g} s")
                window = measure(
                    url,
                    poller,
                    names,
                    agents,
                    plan.interval,
                    args.warmup,
                    args.seconds,
                    args.max_warmup,
                )
            finally:
                _kill_group(poller)
        met = report(plan, window, ready, log_path)
        lines = log_path.read_text(errors="replace").splitlines()
        if lines:
            print(f"  hwpoller logged {len(lines)} lines; first: {lines[0][:160]}")
        return 0 if met or not args.strict else 1
    finally:
        signal.alarm(0)
        _kill_group(poller)


def main() -> int:
    """Parse flags; run the bench or (internally) serve a BMC farm."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    env = os.environ.get
    parser.add_argument("--snmp", type=int, default=int(env("SCALE_SNMP", "5000")))
    parser.add_argument("--bmcs", type=int, default=int(env("SCALE_BMCS", "1000")))
    parser.add_argument(
        "--seconds", type=float, default=float(env("BENCH_SECONDS", "150")), help="measured window"
    )
    parser.add_argument("--warmup", type=float, default=None, help="default: 2 intervals")
    parser.add_argument(
        "--max-warmup", type=float, default=420.0, help="warm up at most this long for all up"
    )
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--snmp-first-port", type=int, default=20000)
    parser.add_argument("--bmc-first-port", type=int, default=26000)
    parser.add_argument("--snmp-procs", type=int, default=2, help="replay agent processes")
    parser.add_argument("--bmc-procs", type=int, default=1, help="BMC farm processes")
    parser.add_argument("--snmp-concurrency", type=int, default=512)
    parser.add_argument("--ipmi-threads", type=int, default=64)
    parser.add_argument(
        "--ipmi-in-process", action="store_true", help="settings.ipmi_process: false (no worker)"
    )
    parser.add_argument("--hard-timeout", type=float, default=None, help="default: window + 600 s")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--memory", action="store_true", help="memory per target instead of the full bench"
    )
    parser.add_argument("--trace", action="store_true", help="--memory: tracemalloc groups")
    parser.add_argument("--settle", type=float, default=40.0, help="--memory: s after all up")
    # Internal: the BMC farm subprocess and the memory probe.
    parser.add_argument("--serve-bmcs", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--first-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bmcs:
        asyncio.run(_serve_bmcs(args.serve_bmcs, args.host, args.first_port))
        return 0
    if args.memory_child:
        raise_open_files_limit()
        got = asyncio.run(_memory_child(args.memory_child, args.settle, args.trace))
        print(json.dumps(got), flush=True)
        os._exit(0)  # a BMC thread still blocked in pyghmi must not hold the exit
    if args.memory:
        return run_memory(args)
    if args.warmup is None:
        args.warmup = 2 * args.interval
    if args.hard_timeout is None:
        args.hard_timeout = max(args.warmup, args.max_warmup) + args.seconds + 600
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
