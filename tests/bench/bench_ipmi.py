"""Benchmark: BMC polls per second, wall time per warm poll, CPU seconds per poll.

N ipmi_sim BMCs (one process and UDP port each, cycling through the Dell, HPE and
Supermicro fixtures) are polled back to back by the real TargetRunner and IPMI driver for a
fixed time, after a warm-up in which every driver logs in and reads its SDR. The poller runs
in this process and the simulators in child processes, so this process's CPU time is the
poller's alone (pyghmi's I/O thread included).

    .venv/bin/python -m tests.bench.bench_ipmi --bmcs 20
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time

from poller.config import Config
from poller.drivers import DriverContext, PollSpec
from poller.drivers.ipmi import IpmiDriver
from poller.profiles import load_profiles
from poller.scheduler import TargetRunner
from poller.store import Store
from tests.ipmisim import IpmiSim, ipmi_config

FIXTURES = ("dell", "hpe", "supermicro")


async def run(
    configs: list[Config], seconds: float, warmup: float, threads: int
) -> tuple[int, int, float, float, list[float], int]:
    """(ok, failed, cpu s, wall s, per-poll durations, logins) measured after warm-up."""
    store = Store()
    context = DriverContext(load_profiles(), 16, threads)
    runners = []
    for config in configs:
        target = config.targets[0]
        store.register(target.name, target.protocol, target.labels)
        spec = PollSpec.from_config(config, target)
        runners.append(TargetRunner(spec, {}, IpmiDriver(spec, context), store, 0, 0))
    counts = {"ok": 0, "failed": 0}
    durations: list[float] = []
    measuring = asyncio.Event()
    stop_at = time.monotonic() + warmup + seconds

    async def loop(runner: TargetRunner) -> None:
        while time.monotonic() < stop_at:
            result = await runner.poll_once()
            if measuring.is_set():
                counts["ok" if result.success else "failed"] += 1
                durations.append(result.duration_seconds)

    tasks = [asyncio.create_task(loop(r)) for r in runners]
    await asyncio.sleep(warmup)
    measuring.set()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    await asyncio.gather(*tasks)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - t0
    logins = 0
    for runner in runners:
        assert isinstance(runner.driver, IpmiDriver)
        logins += runner.driver.logins
        await runner.driver.close()
    context.shutdown()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return counts["ok"], counts["failed"], cpu, wall, durations, logins


def main() -> int:
    """Start the simulators, poll them, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bmcs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=32, help="settings.ipmi_threads")
    args = parser.parse_args()
    sims = [IpmiSim(FIXTURES[i % len(FIXTURES)]) for i in range(args.bmcs)]
    try:
        for sim in sims:
            sim.start(timeout=60)
        configs = [ipmi_config(sim, name=f"bmc-{i}") for i, sim in enumerate(sims)]
        ok, failed, cpu, wall, durations, logins = asyncio.run(
            run(configs, args.seconds, args.warmup, args.threads)
        )
    finally:
        for sim in sims:
            sim.stop()
    polls = ok + failed
    print(
        f"IPMI bench: {args.bmcs} ipmi_sim BMCs (Dell/HPE/Supermicro fixtures, 8-10 sensors "
        f"each), {args.threads} IPMI threads, {wall:.1f} s measured"
    )
    print(f"  BMC polls:               {polls} ({ok} ok, {failed} failed), logins: {logins}")
    print(f"  BMC polls per second:    {polls / wall:.1f}")
    if durations:
        q = statistics.quantiles(durations, n=20)
        print(
            f"  wall time per warm poll: median {statistics.median(durations) * 1000:.1f} ms, "
            f"p95 {q[18] * 1000:.1f} ms"
        )
    if polls:
        print(f"  CPU seconds per poll:    {cpu / polls * 1000:.2f} ms (poller process only)")
        print(f"  poller CPU utilisation:  {cpu / wall * 100:.0f} % of one core")
        per_core = polls / cpu if cpu else float("inf")
        print(
            f"  => one core sustains ~{per_core:.0f} BMC polls/s, i.e. ~{per_core * 30:.0f} "
            f"BMCs at a 30 s interval"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
