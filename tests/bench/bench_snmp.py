"""Benchmark: device-polls per second and CPU-seconds per device-poll against N SNMP agents.

N simulated APC Smart-UPS agents (snmpsim, one UDP endpoint each, same recording) are polled
back to back by the real scheduler and SNMP driver for a fixed time. The poller runs in this
process; snmpsim runs in child processes, so this process's CPU time is the poller's alone.
Throughput is usually bounded by snmpsim (pure Python), CPU per poll is the poller's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import resource

import yaml

from poller.app import raise_open_files_limit
from poller.config import parse_config
from poller.driver import DriverContext, PollSpec, driver_for
from poller.profiles import load_profiles
from poller.scheduler import TargetRunner
from poller.simulator.snmpsim import SnmpSim, free_udp_port
from poller.snmp.transport import GufoTransport
from poller.snmp.wire import WireTransport
from poller.store import Store
from tests.bench.closed_loop import Measured, measure

COMMUNITY = "apc-smartups"


REQUESTS = [0]


def count_requests() -> None:
    """Count SNMP requests: every PDU on SNMPv2c (WireTransport), and on gufo-snmp's
    transport (v1, v3) GET chunks, with each walk counted as one."""
    original = GufoTransport._call
    exchange = WireTransport._exchange

    async def counted(self, op):  # type: ignore[no-untyped-def]
        REQUESTS[0] += 1
        return await original(self, op)

    async def exchanged(self, *args):  # type: ignore[no-untyped-def]
        REQUESTS[0] += 1
        return await exchange(self, *args)

    GufoTransport._call = counted  # type: ignore[method-assign]
    WireTransport._exchange = exchanged  # type: ignore[method-assign]


def build_config(ports: list[int]) -> str:
    doc = {
        "settings": {"interval": "30s", "timeout": "10s", "retries": 0},
        "auths": {"sim": {"protocol": "snmp", "version": "2c", "community": COMMUNITY}},
        "targets": [
            {"name": f"ups-{i}", "address": f"127.0.0.1:{port}", "protocol": "snmp", "auth": "sim"}
            for i, port in enumerate(ports)
        ],
    }
    return yaml.safe_dump(doc)


async def run(config_text: str, seconds: float, warmup: float) -> Measured:
    """Every target polls back to back through the scheduler's poll path."""
    config = parse_config(config_text, "<bench>")
    store = Store()
    context = DriverContext(load_profiles(), config.settings)
    runners = []
    for target in config.targets:
        store.register(target.name, target.protocol, target.labels)
        spec = PollSpec.from_config(config, target)
        runners.append(TargetRunner(spec, {}, driver_for(spec, context), store, 0, 0))
    measured = await measure(runners, seconds, warmup, on_start=lambda: REQUESTS.__setitem__(0, 0))
    for runner in runners:
        await runner.driver.close()
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--simulators", type=int, default=1, help="snmpsim processes to spread the agents over"
    )
    args = parser.parse_args()
    raise_open_files_limit()
    count_requests()
    ports = [free_udp_port() for _ in range(args.agents)]
    chunks = [ports[i :: args.simulators] for i in range(args.simulators)]
    sims = [SnmpSim(ports=chunk) for chunk in chunks]
    for sim in sims:
        sim.start(timeout=120)
    try:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        measured = asyncio.run(run(build_config(ports), args.seconds, warmup=5.0))
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        for sim in sims:
            sim.stop()
    ok, failed, cpu, wall = measured.ok, measured.failed, measured.cpu, measured.wall
    polls = measured.polls
    print(
        f"SNMP bench: {args.agents} simulated APC Smart-UPS agents "
        f"({args.simulators} snmpsim process(es)), {wall:.1f} s measured"
    )
    print(f"  device-polls:            {polls} ({ok} ok, {failed} failed)")
    print(f"  device-polls per second: {polls / wall:.1f}")
    if polls:
        print(f"  requests per poll:       {REQUESTS[0] / polls:.1f}")
        print(f"  CPU seconds per poll:    {cpu / polls * 1000:.2f} ms (poller process only)")
        print(f"  poller CPU utilisation:  {cpu / wall * 100:.0f} % of one core")
        per_core = polls / cpu if cpu else float("inf")
        print(
            f"  => one core sustains ~{per_core:.0f} polls/s, i.e. ~{per_core * 30:.0f} "
            f"devices at a 30 s interval"
        )
    print(f"  max RSS: {rss1 / 1024:.0f} MiB (before polling: {rss0 / 1024:.0f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
