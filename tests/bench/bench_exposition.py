"""Benchmark: /metrics exposition time for about 100,000 samples, and whether it grows with
the number of scrapes.

A store holds TARGETS simulated targets whose last polls carry realistic readings (inlet and
exhaust temperatures with limits, humidity, a leak sensor, fans with status, a UPS), about
50 samples per target. Printed: the first scrape (every target rendered), scrapes with no
new poll (text reused), and scrapes after a tenth of the targets polled again (the steady
state when Prometheus scrapes every 15 s and devices are polled every 30 s, spread out), in
ms of CPU and wall per scrape, over `--scrapes` scrapes each.

`python -m tests.bench.bench_exposition [--targets 2000] [--scrapes 20]`
"""

from __future__ import annotations

import argparse
import resource
import time

from poller.exporter import attach, exposition
from poller.model import (
    DeviceData,
    DeviceInfo,
    HwType,
    LimitType,
    Location,
    PollResult,
    PowerSource,
    Quantity,
    Reading,
    State,
)
from poller.store import Store


def readings(i: int, poll: int) -> tuple[Reading, ...]:
    """One device's readings; values move with `poll`."""
    drift = (poll % 7) * 0.1
    out = []
    for n, location in enumerate((Location.INLET, Location.EXHAUST, Location.CPU, Location.CPU)):
        sensor = f"temp{n}"
        out.append(Reading(Quantity.TEMPERATURE, sensor, 22.0 + n * 5 + drift, location))
        for limit, value in ((LimitType.HIGH_DEGRADED, 35.0), (LimitType.HIGH_CRITICAL, 40.0)):
            out.append(Reading(Quantity.TEMPERATURE, sensor, value, location, limit_type=limit))
    out.append(Reading(Quantity.HUMIDITY, "room", 0.41 + drift / 100, Location.AMBIENT))
    out.append(Reading(Quantity.LEAK, "rope", 0.0, Location.FLOOR))
    for fan in range(6):
        out.append(Reading(Quantity.FAN_SPEED, f"fan{fan}", 4200.0 + fan + poll % 3))
        out.append(Reading(Quantity.STATUS, f"fan{fan}", state=State.OK.value, hw_type=HwType.FAN))
    out.append(Reading(Quantity.UPS_POWER_SOURCE, "", state=PowerSource.UTILITY.value))
    out.append(Reading(Quantity.BATTERY_CHARGE, "battery", 1.0))
    return tuple(out)


def record(store: Store, name: str, i: int, poll: int) -> None:
    store.record(
        PollResult(
            target=name,
            protocol="snmp",
            success=True,
            duration_seconds=0.01 + poll * 1e-6,
            finished_at=time.time(),
            data=DeviceData(DeviceInfo("ACME", "X1", "1.0", "acme", "snmpv2c"), readings(i, poll)),
            labels={"site": "s", "room": "r", "rack": f"R{i % 40}"},
        )
    )


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(scrapes: int, before: object, store: Store) -> tuple[float, float, int]:
    """CPU and wall ms per scrape, and the size of the last one."""
    cpu_total = wall_total = 0.0
    size = 0
    for _ in range(scrapes):
        if callable(before):
            before()
        c0, w0 = cpu(), time.perf_counter()
        body = exposition(store)
        cpu_total += cpu() - c0
        wall_total += time.perf_counter() - w0
        size = len(body)
    return cpu_total / scrapes * 1000, wall_total / scrapes * 1000, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()
    store = Store()
    names = [f"dev-{i:05d}" for i in range(args.targets)]
    for i, name in enumerate(names):
        store.register(name, "snmp", {"site": "s", "room": "r", "rack": f"R{i % 40}"})
        record(store, name, i, 0)
    body = exposition(store)
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    print(f"{args.targets} targets, {samples} samples, {len(body) / 1e6:.1f} MB per scrape")
    polls = iter(range(1, 1 << 30))

    def new_store_rendering() -> None:
        store.exposition_cache = None  # every target rendered by the scrape (cold start)

    def tenth_polled() -> None:
        poll = next(polls)
        for i in range(poll % 10, args.targets, 10):
            record(store, names[i], i, poll)

    for label, before in (
        ("first scrape (every target rendered)", new_store_rendering),
        ("no new poll since the last scrape", None),
        ("a tenth of the targets polled again", tenth_polled),
    ):
        cpu_ms, wall_ms, _ = timed(args.scrapes, before, store)
        print(f"  {label:<40} {cpu_ms:8.1f} ms CPU {wall_ms:8.1f} ms wall per scrape")
    # `hwpoller run` attaches the exporter to the store: a poll renders its target's text.
    attach(store)
    exposition(store)
    c0 = cpu()
    for _ in range(args.scrapes):
        tenth_polled()
    per_poll = (cpu() - c0) / (args.scrapes * len(range(0, args.targets, 10))) * 1000
    cpu_ms, wall_ms, _ = timed(args.scrapes, tenth_polled, store)
    label = "attached (as in run): a tenth polled"
    print(
        f"  {label:<40} {cpu_ms:8.1f} ms CPU {wall_ms:8.1f} ms wall per scrape; "
        f"{per_poll:.3f} ms CPU per recorded poll"
    )
    # Does it grow with the number of scrapes? The same steady state, 10x as many scrapes on.
    for _ in range(args.scrapes * 10):
        tenth_polled()
        exposition(store)
    cpu_ms, wall_ms, _ = timed(args.scrapes, tenth_polled, store)
    label = f"the same after {args.scrapes * 11} more scrapes"
    print(f"  {label:<40} {cpu_ms:8.1f} ms CPU {wall_ms:8.1f} ms wall per scrape")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
