"""Benchmark: hwpoller's IPMI driver against Prometheus' ipmi_exporter on the same BMC.

Two ipmi_sim BMCs (OpenIPMI, the same fixture) serve the same sensors: one for hwpoller, one
for ipmi_exporter (Debian's prometheus-ipmi-exporter, which runs FreeIPMI's ipmi-sensors
and bmc-info for each scrape). Rounds alternate A/B so machine drift cancels.

  A: hwpoller polls the BMC back to back through the scheduler's poll path (the session and
     the SDR stay cached between polls, as in `hwpoller run`) and renders the target's
     exposition after each poll; CPU is this process's, pyghmi's I/O thread included.
  B: ipmi_exporter is scraped back to back (/ipmi?target=...&module=default, collectors ipmi
     and bmc); CPU is the exporter's plus its FreeIPMI children's (/proc/PID/stat utime,
     stime, cutime, cstime).

`python -m tests.bench.bench_vs_ipmi_exporter [--rounds N] [--polls N] [--fixture NAME]`
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from poller.config import Settings
from poller.driver import DriverContext, PollSpec
from poller.ipmi.driver import IpmiDriver
from poller.profiles import load_profiles
from poller.scheduler import TargetRunner
from poller.store import Store
from tests.bench.bench_vs_exporters import TICK, Side, alternate, free_tcp_port, hwpoller_round
from tests.ipmisim import IpmiSim, ipmi_config


def proc_cpu_with_children(pid: int) -> float:
    """User + system CPU seconds of a process and of its children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK


def exporter_round(url: str, pid: int, polls: int) -> tuple[float, float]:
    """CPU (the exporter's and FreeIPMI's) and wall seconds for `polls` scrapes."""
    cpu0, wall0 = proc_cpu_with_children(pid), time.perf_counter()
    for _ in range(polls):
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - loopback
            body = response.read()
        if b'ipmi_up{collector="ipmi"} 1' not in body:
            raise RuntimeError(f"ipmi_exporter scrape failed:\n{body.decode()[:2000]}")
    return proc_cpu_with_children(pid) - cpu0, time.perf_counter() - wall0


def exporter_config(sim: IpmiSim) -> dict[str, object]:
    """An ipmi_exporter module for the simulator: what hwpoller reads (sensors with their
    thresholds, the BMC's identity), as the same user over IPMI 2.0 with cipher suite 3."""
    return {
        "modules": {
            "default": {
                "user": sim.username,
                "pass": sim.password,
                "privilege": "user",
                "driver": "LAN_2_0",
                "timeout": 10000,
                "collectors": ["ipmi", "bmc"],
                # ipmi_sim needs it (see docs/ipmi.md); cipher suite 3, as hwpoller uses.
                "workaround_flags": ["opensesspriv"],
                "custom_args": {"ipmi": ["-I", "3"], "bmc": ["-I", "3"]},
            }
        }
    }


def bench(fixture: str, rounds: int, polls: int) -> None:
    """Run the A/B rounds for one fixture and print the table."""
    exporter_bin = shutil.which("prometheus-ipmi-exporter")
    if exporter_bin is None:
        raise SystemExit("prometheus-ipmi-exporter is not installed (make bench installs it)")
    with IpmiSim(fixture) as sim_a, IpmiSim(fixture) as sim_b:
        config = ipmi_config(sim_a)
        target = config.targets[0]
        spec = PollSpec.from_config(config, target)
        context = DriverContext(load_profiles(), Settings.model_validate({"ipmi_threads": 2}))
        driver = IpmiDriver(spec, context)
        store = Store()
        store.register(target.name, target.protocol, target.labels)
        runner = TargetRunner(spec, dict(target.labels), driver, store, 0, 0)
        first = asyncio.run(runner.poll_once())  # login, SDR
        if not first.success:
            raise SystemExit(f"hwpoller cannot poll the simulator: {first.message}")
        with tempfile.TemporaryDirectory(prefix="hwpoller-bench-ipmi-") as tmp:
            conf = Path(tmp) / "ipmi.yml"
            conf.write_text(yaml.safe_dump(exporter_config(sim_b)))
            port = free_tcp_port()
            exporter = subprocess.Popen(
                [
                    exporter_bin,
                    f"--config.file={conf}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=error",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=tmp,
                env={"HOME": tmp, "PATH": "/usr/sbin:/usr/bin:/bin"},  # FreeIPMI's SDR cache
            )
            url = f"http://127.0.0.1:{port}/ipmi?target=127.0.0.1:{sim_b.port}&module=default"
            try:
                deadline = time.monotonic() + 20
                while True:
                    try:
                        exporter_round(url, exporter.pid, 2)  # warm-up (its SDR cache), and up?
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)
                readings = len(first.data.readings) if first.data else 0
                print(f"\n{fixture}: hwpoller {readings} readings; ipmi_exporter ipmi+bmc")
                a, b = Side(), Side()
                alternate(
                    rounds,
                    polls,
                    (a, lambda: asyncio.run(hwpoller_round(runner, store, polls))),
                    (b, lambda: exporter_round(url, exporter.pid, polls)),
                )
                print(
                    f"  total: hwpoller {a.cpu / a.polls * 1000:.2f} ms CPU, "
                    f"{a.wall / a.polls * 1000:.2f} ms wall; ipmi_exporter "
                    f"{b.cpu / b.polls * 1000:.2f} ms CPU, {b.wall / b.polls * 1000:.2f} ms wall; "
                    f"CPU ratio {a.cpu / b.cpu if b.cpu else float('inf'):.2f}"
                )
            finally:
                exporter.terminate()
                exporter.wait(10)
                asyncio.run(driver.close())
                context.shutdown()


def main() -> int:
    """Benchmark the fixture asked for."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fixture", default="dell")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--polls", type=int, default=20, help="polls per side per round")
    args = parser.parse_args()
    bench(args.fixture, args.rounds, args.polls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
