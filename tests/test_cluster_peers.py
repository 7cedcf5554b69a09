"""Real peers for the cluster tests: an etcd on loopback (own ports, own data directory),
`hwpoller run` members, and what each member exports. Imported by tests/test_cluster*.py
and tests/bench/bench_cluster.py; the one test here checks the etcd helper itself."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
UPS = REPO / "poller" / "simulator" / "snmprec" / "rfc1628-ups.snmprec"
_UP = re.compile(r'^hwpoller_up\{device="([^"]+)"[^}]*\} (\S+)$', re.M)


def free_tcp_port() -> int:
    """An unused loopback TCP port (parallel-safe: the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_etcd() -> str:
    """Path of etcd; installed with apt-get (Debian's etcd-server and etcd-client, for
    etcdctl) when missing and root. The Makefile's APT_PACKAGES should list them too."""
    path = shutil.which("etcd")
    if path and shutil.which("etcdctl"):
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        # One installer at a time across pytest-xdist workers.
        with Path("/tmp/hwpoller-etcd-install.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for argv in (
                ["apt-get", "install", "-y", "-qq", "etcd-server", "etcd-client"],
                ["apt-get", "update", "-qq"],  # a fresh machine may have no package lists
                ["apt-get", "install", "-y", "-qq", "etcd-server", "etcd-client"],
            ):
                if shutil.which("etcd") and shutil.which("etcdctl"):
                    break
                subprocess.run(argv, env=env, capture_output=True, timeout=600, check=False)
    path = shutil.which("etcd")
    if path is None:
        raise AssertionError("etcd is not installed: apt-get install etcd-server")
    return path


def fetch(url: str, timeout: float = 3.0) -> str:
    """GET a loopback URL; "" while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            return str(resp.read().decode())
    except (urllib.error.URLError, OSError):
        return ""


class Etcd:
    """One etcd member on loopback with its own ports and data directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.client_port = free_tcp_port()
        self.peer_port = free_tcp_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Etcd:
        """Start etcd and wait until it answers /health."""
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "etcd.log").open("ab")
        self.proc = subprocess.Popen(
            [
                require_etcd(),
                "--name",
                "t",
                "--data-dir",
                str(self.workdir / "data"),
                "--listen-client-urls",
                self.url,
                "--advertise-client-urls",
                self.url,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"t={peer}",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while '"health":"true"' not in fetch(f"{self.url}/health").replace(" ", ""):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise AssertionError("etcd did not start:\n" + self.log()[-2000:])
            time.sleep(0.1)
        return self

    def log(self) -> str:
        """What etcd wrote."""
        path = self.workdir / "etcd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def freeze(self) -> None:
        """SIGSTOP: no answers at all, as when quorum is lost."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop etcd (thawed first, so that SIGTERM can act)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cluster_config(
    path: Path,
    etcd: list[str],
    member: str,
    agent_port: int,
    targets: int,
    *,
    prefix: str = "/hwpoller/test",
    ttl: str = "10s",
    interval: str = "2s",
    site: str | None = None,
    target_sites: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A member's config: `targets` SNMP targets ups-0.. on one replay agent port."""
    cluster: dict[str, Any] = {"etcd": etcd, "member": member, "lease_ttl": ttl, "prefix": prefix}
    if site:
        cluster["site"] = site
    cluster.update(extra or {})
    doc = {
        "settings": {
            "interval": interval,
            "timeout": "1500ms" if interval == "2s" else None,
            "retries": 0,
            "notification_address": "",
        },
        "auths": {"ups": {"protocol": "snmp", "version": "2c", "community": "rfc1628-ups"}},
        "targets": [
            {
                "name": f"ups-{i}",
                "address": f"127.0.0.1:{agent_port}",
                "protocol": "snmp",
                "auth": "ups",
                "labels": {"site": target_sites[i % len(target_sites)]} if target_sites else {},
            }
            for i in range(targets)
        ],
        "cluster": cluster,
    }
    doc["settings"] = {k: v for k, v in doc["settings"].items() if v is not None}
    path.write_text(yaml.safe_dump(doc))
    return path


class Member:
    """One `hwpoller run` process of the cluster."""

    def __init__(self, name: str, config: Path, workdir: Path) -> None:
        self.name = name
        self.config = config
        self.port = free_tcp_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Member:
        """Start the process (returns at once)."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "poller",
                "run",
                "--config.file",
                str(self.config),
                "--web.listen-address",
                f"127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def metrics(self) -> str:
        """This member's /metrics ("" while it does not answer)."""
        if self.proc is None or self.proc.poll() is not None:
            return ""
        return fetch(f"{self.base}/metrics")

    def up_targets(self, text: str | None = None) -> set[str]:
        """Targets this member exports with hwpoller_up 1."""
        text = self.metrics() if text is None else text
        return {d for d, v in _UP.findall(text) if float(v) == 1}

    def exported(self, text: str | None = None) -> set[str]:
        """Targets this member exports a hwpoller_up for (any value)."""
        text = self.metrics() if text is None else text
        return {d for d, _ in _UP.findall(text)}

    def gauge(self, name: str, text: str | None = None) -> float | None:
        """The value of one unlabelled cluster gauge."""
        text = self.metrics() if text is None else text
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(match.group(1)) if match else None

    def log(self) -> str:
        """What the process logged."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        """Send a signal."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int | None:
        """SIGTERM (after SIGCONT), then kill if it lingers; the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def ownership(members: list[Member]) -> dict[str, list[str]]:
    """{target: [members exporting it with hwpoller_up 1]} over the running members."""
    seen: dict[str, list[str]] = {}
    for member in members:
        for target in member.up_targets():
            seen.setdefault(target, []).append(member.name)
    return seen


def wait_until(predicate: Any, timeout: float, step: float = 0.5) -> float:
    """Poll `predicate` until true; seconds it took. AssertionError on timeout."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)


def exactly_once(members: list[Member], targets: int) -> bool:
    """Every target ups-0..targets-1 up on exactly one of the members."""
    seen = ownership(members)
    return set(seen) == {f"ups-{i}" for i in range(targets)} and all(
        len(v) == 1 for v in seen.values()
    )


@pytest.mark.integration
def test_etcd_helper_starts_and_stops(tmp_path: Path) -> None:
    """The helper's etcd answers the v3 JSON gateway on its own port, and stops."""
    etcd = Etcd(tmp_path / "etcd").start()
    try:
        req = urllib.request.Request(  # noqa: S310 - loopback
            f"{etcd.url}/v3/kv/range", data=b'{"key": "Zm9v"}', method="POST"
        )
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback
            assert b"header" in resp.read()
    finally:
        etcd.stop()
    assert etcd.proc is not None and etcd.proc.poll() is not None
