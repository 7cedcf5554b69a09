"""Cluster mode for real: etcd on loopback, `hwpoller run` members, a replayed SNMP agent.

Every target is exported with hwpoller_up 1 by exactly one member: at start, after a member
is killed (-9), after a member frozen (SIGSTOP) past its lease comes back, while etcd itself
is frozen (no quorum: fail static), and after a member joins. A short lease (4s) keeps the
wall time down; the acceptance run with lease_ttl 10s is tests/bench/bench_cluster.py."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from poller.simulator.replay import ReplayProcess
from tests.test_cluster_peers import (
    UPS,
    Etcd,
    Member,
    cluster_config,
    exactly_once,
    free_tcp_port,
    ownership,
    wait_until,
)

pytestmark = pytest.mark.integration

TARGETS = 30
TTL = 4.0
INTERVAL = 2.0


@pytest.fixture
def agent() -> Iterator[ReplayProcess]:
    """One replayed UPS on one port: every target polls it (each under its own name)."""
    with ReplayProcess([UPS]) as process:
        yield process


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    """A fresh etcd for one test."""
    server = Etcd(tmp_path / "etcd").start()
    yield server
    server.stop()


def _members(tmp_path: Path, etcd_url: str, port: int, names: str, **kw: object) -> list[Member]:
    out = []
    for n in names:
        config = cluster_config(
            tmp_path / f"{n}.yml",
            [etcd_url],
            f"poller-{n}",
            port,
            TARGETS,
            ttl=f"{TTL:g}s",
            **kw,  # type: ignore[arg-type]
        )
        out.append(Member(f"poller-{n}", config, tmp_path))
    return out


def _up_line(member: Member, target: str) -> str:
    match = re.search(rf'^hwpoller_up\{{device="{target}"[^}}]*\}}', member.metrics(), re.M)
    return match.group(0) if match else ""


@pytest.mark.slow(60)
def test_each_target_polled_once_through_kill_freeze_quorum_loss_and_join(
    tmp_path: Path, etcd: Etcd, agent: ReplayProcess
) -> None:
    members = _members(tmp_path, etcd.url, agent.port, "abcd", target_sites=["x", "y"])
    a, b, c, d = members
    try:
        for m in (a, b, c):
            m.start()
        wait_until(lambda: exactly_once([a, b, c], TARGETS), 20)
        assert all(m.gauge("hwpoller_cluster_members") == 3 for m in (a, b, c))
        assert sum(m.gauge("hwpoller_cluster_owned_targets") or 0 for m in (a, b, c)) == TARGETS
        owned_a = a.up_targets()
        assert owned_a, "rendezvous gave poller-a nothing of 30 targets"
        moved = sorted(owned_a)[0]
        before = _up_line(a, moved)

        # kill -9: survivors take poller-a's targets within lease_ttl plus an interval (and
        # a scrape's worth of slack on a shared machine).
        a.kill()
        took = wait_until(lambda: exactly_once([b, c], TARGETS), TTL + INTERVAL + 6, 0.2)
        # Same series on the new owner: same labels, only the member serving it changed.
        owner = b if moved in b.up_targets() else c
        assert _up_line(owner, moved) == before
        assert any(m.gauge("hwpoller_cluster_members") == 2 for m in (b, c))

        # SIGSTOP past the lease: on SIGCONT poller-b must drop what poller-c took before it
        # polls again, and never keep exporting it.
        b.signal(signal.SIGSTOP)
        wait_until(lambda: c.up_targets() == {f"ups-{i}" for i in range(TARGETS)}, TTL + 8, 0.2)
        time.sleep(1)
        b.signal(signal.SIGCONT)
        # From the first scrape on, poller-b serves none of what poller-c polls now: its
        # scrapes and polls wait until it has re-read the members.
        for _ in range(10):
            assert not b.up_targets() & c.up_targets(), "a stale owner kept exporting"
            time.sleep(0.1)
        wait_until(lambda: exactly_once([b, c], TARGETS), 2 * INTERVAL + 2, 0.1)
        assert "lease" in b.log() and "joining again" in b.log()

        # etcd frozen (no quorum): nobody can renew, so everyone stays static and polls on.
        etcd.freeze()
        time.sleep(TTL + 2)
        assert exactly_once([b, c], TARGETS)
        assert b.gauge("hwpoller_cluster_coordinator_up") == 0
        assert c.gauge("hwpoller_cluster_fail_static") == 1
        polled = {m.name: m.gauge("hwpoller_cluster_owned_targets") for m in (b, c)}
        time.sleep(INTERVAL + 1)
        assert exactly_once([b, c], TARGETS), "a target stopped being polled without etcd"
        etcd.thaw()
        wait_until(lambda: all(m.gauge("hwpoller_cluster_coordinator_up") == 1 for m in (b, c)), 10)
        assert {m.name: m.gauge("hwpoller_cluster_owned_targets") for m in (b, c)} == polled

        # A member joining takes only the targets that hash to it, from both others.
        before_join = ownership([b, c])
        d.start()
        wait_until(lambda: exactly_once([b, c, d], TARGETS) and bool(d.up_targets()), 15, 0.2)
        after = ownership([b, c, d])
        changed = {t for t in after if after[t] != before_join.get(t)}
        assert changed == d.up_targets(), "a target moved between members that stayed"
        logs = "".join(m.log() for m in members)
        assert "Traceback" not in logs
        print(f"failover after kill -9: {took:.1f}s; join moved {len(changed)} of {TARGETS}")
    finally:
        for m in members:
            m.stop()


def test_member_started_while_etcd_is_down_polls_everything_then_joins(
    tmp_path: Path, agent: ReplayProcess
) -> None:
    etcd = Etcd(tmp_path / "etcd")  # its ports are chosen, nothing listens yet
    (m,) = _members(tmp_path, etcd.url, agent.port, "a")
    (other,) = _members(tmp_path, etcd.url, agent.port, "b")
    try:
        m.start()
        wait_until(lambda: len(m.up_targets()) == TARGETS, 15)
        assert m.gauge("hwpoller_cluster_coordinator_up") == 0
        assert m.gauge("hwpoller_cluster_fail_static") == 1
        assert "cannot reach etcd" in m.log() and "polling all 30 targets" in m.log()
        etcd.start()
        wait_until(lambda: m.gauge("hwpoller_cluster_coordinator_up") == 1, 10)
        assert m.gauge("hwpoller_cluster_fail_static") == 0
        other.start()
        wait_until(lambda: exactly_once([m, other], TARGETS) and bool(other.up_targets()), 15)
    finally:
        m.stop()
        other.stop()
        etcd.stop()


def test_duplicate_member_name_is_refused(tmp_path: Path, etcd: Etcd, agent: ReplayProcess) -> None:
    first = Member(
        "first",
        cluster_config(tmp_path / "a.yml", [etcd.url], "poller-same", agent.port, 2, ttl="2s"),
        tmp_path,
    )
    second = Member(
        "second",
        cluster_config(tmp_path / "b.yml", [etcd.url], "poller-same", agent.port, 2, ttl="2s"),
        tmp_path,
    )
    try:
        first.start()
        wait_until(lambda: first.gauge("hwpoller_cluster_coordinator_up") == 1, 15)
        second.start()
        assert second.proc is not None
        assert second.proc.wait(20) == 1
        log = second.log()
        assert "cluster.member: 'poller-same' is already a live member of /hwpoller/test" in log
        assert "Traceback" not in log
        assert first.gauge("hwpoller_cluster_coordinator_up") == 1
    finally:
        first.stop()
        second.stop()


def test_shutdown_hands_over_at_once(tmp_path: Path, etcd: Etcd, agent: ReplayProcess) -> None:
    """SIGTERM gives the lease back: the other member takes over without waiting a ttl."""
    a, b = _members(tmp_path, etcd.url, agent.port, "ab")
    try:
        a.start()
        b.start()
        wait_until(lambda: exactly_once([a, b], TARGETS), 20)
        assert a.stop() == 0
        took = wait_until(lambda: len(b.up_targets()) == TARGETS, TTL + INTERVAL + 4, 0.2)
        assert took < TTL, f"took {took:.1f}s: the lease was not given back"
    finally:
        a.stop()
        b.stop()


def test_unreachable_endpoint_port_is_reported(tmp_path: Path, agent: ReplayProcess) -> None:
    """An endpoint nobody listens on: a clear log line naming it, and polling goes on."""
    url = f"http://127.0.0.1:{free_tcp_port()}"
    (m,) = _members(tmp_path, url, agent.port, "a")
    try:
        m.start()
        wait_until(lambda: "cannot reach etcd" in m.log(), 15)
        assert url in m.log()
    finally:
        m.stop()


def test_etcd_authentication_never_shows_the_password(
    tmp_path: Path, etcd: Etcd, agent: ReplayProcess
) -> None:
    """etcd with auth enabled: the member logs in with password_file and joins; a wrong
    password is reported (etcd's reason) and neither password appears anywhere."""
    import shutil
    import subprocess

    canary = "CANARY-etcd-pw-4471"
    etcdctl = shutil.which("etcdctl")
    assert etcdctl, "etcdctl is not installed: apt-get install etcd-client"
    for args in (["user", "add", "root", f"--new-user-password={canary}"], ["auth", "enable"]):
        subprocess.run(
            [etcdctl, f"--endpoints={etcd.url}", *args], check=True, timeout=20, capture_output=True
        )
    good, bad = tmp_path / "good-pw", tmp_path / "bad-pw"
    good.write_text(canary + "\n")
    bad.write_text("CANARY-wrong-8120\n")
    members = []
    for name, secret in (("a", good), ("b", bad)):
        (m,) = _members(
            tmp_path,
            etcd.url,
            agent.port,
            name,
            extra={"username": "root", "password_file": str(secret)},
        )
        members.append(m.start())
    a, b = members
    try:
        wait_until(lambda: a.gauge("hwpoller_cluster_coordinator_up") == 1, 15)
        wait_until(lambda: "cannot reach etcd" in b.log(), 15)
        assert "authentication failed" in b.log()
        assert b.gauge("hwpoller_cluster_fail_static") == 1
        outputs = [a.log(), b.log(), a.metrics(), b.metrics()]
    finally:
        for m in members:
            m.stop()
    for text in outputs:
        assert canary not in text
        assert "CANARY-wrong" not in text


def test_reload_splits_the_new_target_list(
    tmp_path: Path, etcd: Etcd, agent: ReplayProcess
) -> None:
    """SIGHUP with more targets: every member computes the same split of the new list."""
    a, b = _members(tmp_path, etcd.url, agent.port, "ab")
    try:
        a.start()
        b.start()
        wait_until(lambda: exactly_once([a, b], TARGETS), 20)
        for m in (a, b):
            cluster_config(m.config, [etcd.url], m.name, agent.port, TARGETS + 10, ttl=f"{TTL:g}s")
            m.signal(signal.SIGHUP)
        wait_until(lambda: exactly_once([a, b], TARGETS + 10), 15)
        assert all(m.gauge("hwpoller_cluster_targets") == TARGETS + 10 for m in (a, b))
        assert "reloaded" in a.log() and "Traceback" not in a.log() + b.log()
    finally:
        a.stop()
        b.stop()
