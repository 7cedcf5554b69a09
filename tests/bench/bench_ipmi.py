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
import statistics

from poller.config import Config, Settings
from poller.driver import DriverContext, PollSpec
from poller.ipmi.driver import IpmiDriver
from poller.profiles import load_profiles
from poller.scheduler import TargetRunner
from poller.store import Store
from tests.bench.closed_loop import Measured, measure
from tests.ipmisim import IpmiSim, ipmi_config

FIXTURES = ("dell", "hpe", "supermicro")


async def run(
    configs: list[Config], seconds: float, warmup: float, threads: int
) -> tuple[Measured, int]:
    """What the measured window saw, and how many logins the drivers made."""
    store = Store()
    context = DriverContext(load_profiles(), Settings.model_validate({"ipmi_threads": threads}))
    runners = []
    for config in configs:
        target = config.targets[0]
        store.register(target.name, target.protocol, target.labels)
        spec = PollSpec.from_config(config, target)
        runners.append(TargetRunner(spec, {}, IpmiDriver(spec, context), store, 0, 0))
    measured = await measure(runners, seconds, warmup)
    logins = 0
    for runner in runners:
        assert isinstance(runner.driver, IpmiDriver)
        logins += runner.driver.logins
        await runner.driver.close()
    context.shutdown()
    return measured, logins


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
        measured, logins = asyncio.run(run(configs, args.seconds, args.warmup, args.threads))
    finally:
        for sim in sims:
            sim.stop()
    ok, failed, cpu, wall, durations = (
        measured.ok,
        measured.failed,
        measured.cpu,
        measured.wall,
        measured.durations,
    )
    polls = measured.polls
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
