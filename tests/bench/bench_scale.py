"""Scale benchmark: one real `hwpoller run` polling thousands of SNMP devices and BMCs.

The SNMP devices are replay agents (poller.simulator.replay, one device per UDP port, APC
Smart-UPS, Liebert CRAC and NetBotz recordings mixed) in 1-2 processes; the BMCs are the
project's pure-Python RMCP+ BMCs (poller.simulator.ipmi_bmc), many per process, each on its
own UDP port. hwpoller runs as its own process with a generated config; this process only
scrapes /metrics every 10 s and reads /proc, so hwpoller's figures are its own.

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
        }

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


@dataclass
class Window:
    """What the measured window saw."""

    checks: list[Check] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0
    wait: float = 0.0  # run-queue wait of hwpoller's threads, seconds
    agent_cpu: dict[str, float] = field(default_factory=dict)
    start: dict[str, int] = field(default_factory=dict)
    end: dict[str, int] = field(default_factory=dict)
    peak_rss: int = 0
    load_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    never_at_end: list[str] = field(default_factory=list)
    stale_at_end: list[str] = field(default_factory=list)


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
    return check, {name: seen.get(name, 0.0) for name in names}


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
) -> Window:
    """Warm up, then check freshness every 10 s for `seconds`, with /proc figures."""
    pid = proc.pid
    out = Window(load_start=os.getloadavg())
    deadline = time.monotonic() + warmup
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hwpoller exited with {proc.returncode} during warm-up")
        time.sleep(1)
    out.start = status(pid)
    wait0 = run_queue_wait(pid)
    cpu0, agents0, t0 = (
        cpu_seconds(pid),
        {k: cpu_seconds(p) for k, p in agents.items()},
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
        out.peak_rss = max(out.peak_rss, status(pid)["VmRSS"])
        print(
            f"  t={check.at:5.0f}s scrape {check.seconds:5.2f}s {check.size / 1e6:5.1f} MB  "
            f"oldest {check.oldest:4.0f}s  stale>{interval:g}s {check.stale:5d}  "
            f"late {check.late:5d}  down {check.down:5d}  never {check.never:5d}",
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
    out.end = status(pid)
    out.load_end = os.getloadavg()
    now = time.time()
    out.never_at_end = sorted(n for n, ts in last.items() if ts == 0)
    out.stale_at_end = sorted(n for n, ts in last.items() if ts and now - ts > interval)
    return out


# --- report -----------------------------------------------------------------------------


def report(plan: Plan, window: Window, ready: float, log_path: Path) -> bool:
    """Print the figures table; True when every target of the issue is met."""
    checks = window.checks
    core = window.cpu / window.wall
    rss0, rss1 = window.start["VmRSS"] / 1024, window.end["VmRSS"] / 1024
    peak = window.peak_rss / 1024
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
    print(
        f"  {len(checks)} checks over {window.wall:.0f} s after warm-up; "
        f"/metrics first answered {ready:.1f} s after start"
    )
    load0, load1 = window.load_start, window.load_end
    print(
        f"  load average (1/5/15 min) start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
        f"end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} on {os.cpu_count()} cores"
    )
    print(f"  {'figure':<34} {'value':<40} {'target':<12}")
    row("hwpoller CPU", f"{core:.2f} of one core", "<= 1 core", core <= TARGETS["cpu_cores"])
    row(
        "  of which while scraping",
        f"{scrape_cpu:.1f} s of {window.cpu:.1f} s CPU ({len(checks)} scrapes)",
    )
    row(
        "hwpoller RSS",
        f"{rss0:.0f} MiB -> {rss1:.0f} MiB (peak seen {peak:.0f})",
        "<= 512 MiB",
        max(rss1, peak) <= TARGETS["rss_mib"],
    )
    polled = sum(c.polled for c in checks)
    span = checks[-1].at - checks[0].at
    needed = (plan.snmp + plan.bmcs) / plan.interval
    row(
        "  run-queue wait (CPU starvation)",
        f"{window.wait / window.wall:.2f} s per s (threads runnable, no CPU free)",
    )
    if polled and span > 0:
        per_poll = (window.cpu - scrape_cpu) / (polled * window.wall / span)
        row(
            "successful polls in the window",
            f"{polled / span:.0f}/s (all targets fresh needs {needed:.0f}/s)",
        )
        row(
            "  CPU per successful poll",
            f"{per_poll * 1000:.1f} ms => {per_poll * needed:.2f} cores for all",
            "",
        )
    row("hwpoller fds", f"{window.start['fds']} -> {window.end['fds']}")
    row("hwpoller threads", f"{window.start['Threads']} -> {window.end['Threads']}")
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
    if never:
        kinds: dict[str, int] = {}
        for name in never:
            kind = name.rsplit("-", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        print(f"  never up by kind: {kinds}; e.g. {', '.join(never[:5])}")
    if window.stale_at_end:
        print(f"  stale at the last check, e.g.: {', '.join(window.stale_at_end[:5])}")
    print(f"  hwpoller log (warnings and errors): {log_path}")
    return core <= TARGETS["cpu_cores"] and max(rss1, peak) <= TARGETS["rss_mib"] and fresh


# --- main -------------------------------------------------------------------------------


def _timeout(signum: int, frame: object) -> None:
    raise TimeoutError("scale bench hit its hard timeout")


def run(args: argparse.Namespace) -> int:
    """Start the agents, the BMC farm and hwpoller; measure; stop everything."""
    from poller.simulator.ipmi_bmc import USERS

    raise_open_files_limit()
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
    )
    if plan.snmp and plan.bmcs and plan.snmp_first_port + plan.snmp > plan.bmc_first_port:
        raise SystemExit("the SNMP ports would run into the BMC ports: raise --bmc-first-port")
    _check_ports_free(plan.host, plan.snmp_first_port, plan.snmp, "SNMP agents")
    _check_ports_free(plan.host, plan.bmc_first_port, plan.bmcs, "BMC farm")
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(int(args.hard_timeout))
    replays: list[ReplayProcess] = []
    farms: list[BmcFarm] = []
    poller: subprocess.Popen[str] | None = None
    tmp = Path(tempfile.mkdtemp(prefix="hwpoller-scale-"))
    log_path = tmp / "hwpoller.log"
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
        url = f"http://{listen}/metrics"
        ready = wait_ready(url, poller, 120)
        names = {str(t["name"]) for t in config["targets"]}  # type: ignore[attr-defined]
        agents = {f"replay-{k}": r._proc.pid for k, r in enumerate(replays) if r._proc}
        agents |= {f"bmc-farm-{k}": f.proc.pid for k, f in enumerate(farms) if f.proc}
        print(f"hwpoller serving after {ready:.1f} s; warm-up {args.warmup:g} s", flush=True)
        window = measure(url, poller, names, agents, plan.interval, args.warmup, args.seconds)
        met = report(plan, window, ready, log_path)
        lines = log_path.read_text(errors="replace").splitlines()
        if lines:
            print(f"  hwpoller logged {len(lines)} lines; first: {lines[0][:160]}")
        return 0 if met or not args.strict else 1
    finally:
        signal.alarm(0)
        _kill_group(poller)
        for farm in farms:
            farm.stop()
        for replay in replays:
            replay.stop()


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
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--snmp-first-port", type=int, default=20000)
    parser.add_argument("--bmc-first-port", type=int, default=26000)
    parser.add_argument("--snmp-procs", type=int, default=2, help="replay agent processes")
    parser.add_argument("--bmc-procs", type=int, default=1, help="BMC farm processes")
    parser.add_argument("--snmp-concurrency", type=int, default=512)
    parser.add_argument("--ipmi-threads", type=int, default=64)
    parser.add_argument("--hard-timeout", type=float, default=None, help="default: window + 600 s")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    # Internal: the BMC farm subprocess.
    parser.add_argument("--serve-bmcs", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--first-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bmcs:
        asyncio.run(_serve_bmcs(args.serve_bmcs, args.host, args.first_port))
        return 0
    if args.warmup is None:
        args.warmup = 2 * args.interval
    if args.hard_timeout is None:
        args.hard_timeout = args.warmup + args.seconds + 600
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
