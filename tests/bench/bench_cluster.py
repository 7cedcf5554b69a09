"""Cluster benchmark: one etcd on loopback, 3 `hwpoller run` members, thousands of replayed
SNMP devices (poller.simulator.replay), and what happens when a member dies or joins.

    .venv/bin/python -m tests.bench.bench_cluster                        # 3 x 2,000, 10 tries
    .venv/bin/python -m tests.bench.bench_cluster --targets 300 --tries 3   # smoke

For each try: kill -9 one member, and measure until the survivors (a) own every target
(their health series exist: the ownership moved) and (b) export every target with
hwpoller_up 1 (polled by its new owner); then start it again and measure the join. Moves
are counted from what the members export, against the ideal 1/N of the targets. etcd load:
each member's hwpoller_cluster_etcd_requests_total over a quiet period.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from poller.app import raise_open_files_limit
from poller.simulator.replay import ReplayProcess
from tests.test_cluster_peers import UPS, Etcd, Member, cluster_config

HEALTH = re.compile(r'^hwpoller_last_success_timestamp_seconds\{device="([^"]+)"', re.M)
UP = re.compile(r'^hwpoller_up\{device="([^"]+)"[^}]*\} 1(?:\.0)?$', re.M)
REQUESTS = re.compile(r"^hwpoller_cluster_etcd_requests_total\{[^}]*\} (\S+)$", re.M)


def _owners(members: list[Member]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """{member: targets it owns (health series)}, {member: targets it has up}."""
    owned, up = {}, {}
    for m in members:
        text = m.metrics()
        owned[m.name] = set(HEALTH.findall(text))
        up[m.name] = set(UP.findall(text))
    return owned, up


def _wait(
    members: list[Member], names: set[str], started: float, limit: float
) -> tuple[float, float]:
    """Seconds until `names` are owned exactly once, and until all are up."""
    owned_at = up_at = None
    while time.monotonic() - started < limit:
        owned, up = _owners(members)
        counts: dict[str, int] = {}
        for targets in owned.values():
            for t in targets:
                counts[t] = counts.get(t, 0) + 1
        if owned_at is None and set(counts) == names and all(c == 1 for c in counts.values()):
            owned_at = time.monotonic() - started
        if owned_at is not None and set().union(*up.values()) >= names:
            up_at = time.monotonic() - started
            break
        time.sleep(0.25)
    return (owned_at or float("nan")), (up_at or float("nan"))


def _assignment(members: list[Member]) -> dict[str, str]:
    owned, _ = _owners(members)
    return {t: m for m, targets in owned.items() for t in targets}


def _requests(member: Member) -> float:
    return sum(float(v) for v in REQUESTS.findall(member.metrics()))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--tries", type=int, default=10)
    parser.add_argument("--ttl", default="10s")
    parser.add_argument("--interval", default="30s")
    parser.add_argument("--quiet-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    raise_open_files_limit()
    names = {f"ups-{i}" for i in range(args.targets)}
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    etcd = Etcd(work / "etcd").start()
    agent = ReplayProcess([UPS]).start()
    members = []
    for i in range(args.members):
        config = cluster_config(
            work / f"m{i}.yml",
            [etcd.url],
            f"poller-{i}",
            agent.port,
            args.targets,
            ttl=args.ttl,
            interval=args.interval,
        )
        members.append(Member(f"poller-{i}", config, work))
    failover_owned, failover_up, join_owned, moved_leave, moved_join = [], [], [], [], []
    try:
        for m in members:
            m.start()
        started = time.monotonic()
        owned_s, up_s = _wait(members, names, started, 180)
        print(
            f"start: {args.members} members x {args.targets} targets owned once after "
            f"{owned_s:.1f}s, all up after {up_s:.1f}s"
        )
        # Steady state: etcd requests per second per member.
        before = [_requests(m) for m in members]
        time.sleep(args.quiet_seconds)
        after = [_requests(m) for m in members]
        rates = [(a - b) / args.quiet_seconds for a, b in zip(after, before, strict=True)]
        for k in range(args.tries):
            victim = members[k % len(members)]
            others = [m for m in members if m is not victim]
            before_kill = _assignment(members)
            victim.kill()
            t0 = time.monotonic()
            owned_s, up_s = _wait(others, names, t0, 120)
            failover_owned.append(owned_s)
            failover_up.append(up_s)
            after_kill = _assignment(others)
            moved_leave.append(sum(1 for t in names if before_kill.get(t) != after_kill.get(t)))
            victim.start()
            t1 = time.monotonic()
            owned_j, _ = _wait(members, names, t1, 120)
            while not _owners([victim])[0][victim.name] and time.monotonic() - t1 < 60:
                time.sleep(0.25)
            owned_j, _ = _wait(members, names, t1, 120)
            join_owned.append(owned_j)
            after_join = _assignment(members)
            moved_join.append(sum(1 for t in names if after_kill.get(t) != after_join.get(t)))
            print(
                f"try {k + 1}: kill -9 {victim.name}: owned by survivors after {owned_s:.1f}s, "
                f"all up after {up_s:.1f}s, {moved_leave[-1]} moved; rejoin: "
                f"{moved_join[-1]} moved, settled after {owned_j:.1f}s"
            )
    finally:
        for m in members:
            m.stop()
        agent.stop()
        etcd.stop()
    ideal = args.targets / args.members
    print()
    print(f"{'measure':<44} {'median':>9} {'max':>9}")
    for label, values in (
        ("failover after kill -9: ownership moved (s)", failover_owned),
        ("failover after kill -9: all targets up (s)", failover_up),
        ("rejoin: ownership settled (s)", join_owned),
    ):
        if values:
            print(f"{label:<44} {statistics.median(values):>9.1f} {max(values):>9.1f}")
    for label, values in (
        ("targets moved on leave", moved_leave),
        ("targets moved on join", moved_join),
    ):
        if values:
            print(
                f"{label:<44} {statistics.median(values):>9.0f} {max(values):>9.0f}"
                f"   ideal 1/N = {ideal:.0f} ({statistics.median(values) / ideal:.2f} x ideal)"
            )
    print(
        f"{'etcd requests/s per member (steady state)':<44} "
        f"{statistics.median(rates):>9.2f} {max(rates):>9.2f}   (ttl {args.ttl})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
