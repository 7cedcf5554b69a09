"""The SNMP notification receiver against real senders: net-snmp's snmptrap and snmpinform
(v1, v2c, inform, v3 authPriv SHA/AES), raw hostile datagrams and a flood, received by a real
`hwpoller run` that polls two net-snmp agents and a third target every second."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from poller.simulator.notify import trap_datagram
from poller.simulator.snmpsim import free_udp_port
from tests.test_run_e2e import fetch, free_tcp_port
from tests.test_simulator_scenarios import Samples, select, value
from tests.util import require

# slow(6) each: the module (one shared poller and three snmpd) takes ~40 s on one worker.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(240), pytest.mark.slow(6)]

COMMUNITY = "trap-test-community"
V3_USER = "trapper"
# Canary secrets: they must never appear in hwpoller's log or /metrics.
V3_AUTH = "CANARY-trap-auth-4417"
V3_PRIV = "CANARY-trap-priv-8350"
# Three targets on three loopback addresses, so that a notification's source address
# names exactly one of them.
HOST_A, HOST_B, HOST_C = "127.0.0.2", "127.0.0.3", "127.0.0.4"
UNKNOWN = "127.0.0.9"
TRAP_OID = "1.3.6.1.4.1.318.0.5"  # PowerNet-MIB upsOnBattery
STARTUP = 60.0


class Agent:
    """net-snmp snmpd on one loopback address: a v2c community and a v3 authPriv SHA/AES
    user, serving a few RFC 1628 UPS-MIB objects so that hwpoller polls it as a UPS."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = free_udp_port(host)
        self._tmp = tempfile.TemporaryDirectory(prefix="hwpoller-ntf-snmpd-")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Agent:
        tmp = Path(self._tmp.name)
        (tmp / "snmpd.conf").write_text(
            f"agentaddress udp:{self.host}:{self.port}\n"
            f"rocommunity {COMMUNITY}\n"
            f'createUser {V3_USER} SHA "{V3_AUTH}" AES "{V3_PRIV}"\n'
            f"rouser {V3_USER} priv\n"
            'override 1.3.6.1.2.1.33.1.1.1.0 octet_str "NetSNMP Test UPS"\n'
            'override 1.3.6.1.2.1.33.1.1.2.0 octet_str "SNMPD-1000"\n'
            "override 1.3.6.1.2.1.33.1.2.1.0 integer 2\n"
            "override 1.3.6.1.2.1.33.1.2.4.0 integer 87\n"
            "override 1.3.6.1.2.1.33.1.4.1.0 integer 3\n"
        )
        env = {**os.environ, "SNMP_PERSISTENT_DIR": str(tmp / "persist"), "MIBS": ""}
        argv = [require("snmpd"), "-f", "-Lf", str(tmp / "log"), "-C", "-c"]
        argv += [str(tmp / "snmpd.conf"), "-p", str(tmp / "pid")]
        self._proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [require("snmpget"), "-v2c", "-c", COMMUNITY, "-t", "0.5", "-r", "0",
                 f"{self.host}:{self.port}", "1.3.6.1.2.1.1.2.0"],
                capture_output=True, check=False, timeout=5,
            )  # fmt: skip
            if probe.returncode == 0:
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"snmpd on {self.host} did not answer")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(5)
        self._tmp.cleanup()


@dataclass
class Poller:
    """The running `hwpoller run` and where it listens."""

    proc: subprocess.Popen[bytes]
    url: str
    trap_port: int
    log: Path
    seen: list[str]  # every /metrics body scraped, for the canary check

    @property
    def trap_address(self) -> str:
        return f"127.0.0.1:{self.trap_port}"

    def scrape(self) -> Samples:
        body = fetch(self.url)[1]
        self.seen.append(body)
        out: Samples = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return out

    def wait(self, what: str, check: Callable[[Samples], bool], timeout: float) -> Samples:
        deadline = time.monotonic() + timeout
        samples: Samples = {}
        while time.monotonic() < deadline:
            samples = self.scrape()
            if samples and check(samples):
                return samples
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def last_success(samples: Samples, device: str) -> float:
    return value(samples, "hwpoller_last_success_timestamp_seconds", device=device) or 0.0


def notifications(samples: Samples, device: str, result: str = "polled") -> float:
    return value(samples, "hwpoller_notifications_total", device=device, result=result) or 0.0


def rejected(samples: Samples, reason: str) -> float:
    return value(samples, "hwpoller_notifications_rejected_total", reason=reason) or 0.0


@pytest.fixture(scope="module")
def poller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Poller]:
    """Agents A (v2c) and B (v3) polled every 60s, C every second; the receiver on."""
    tmp = tmp_path_factory.mktemp("notifications")
    agents = [Agent(HOST_A).start(), Agent(HOST_B).start(), Agent(HOST_C).start()]
    try:
        port, trap_port = free_tcp_port(), free_udp_port()
        doc = {
            "settings": {
                "listen_address": f"127.0.0.1:{port}",
                "notification_address": f"127.0.0.1:{trap_port}",
                "interval": "60s",
                "timeout": "2s",
                "retries": 0,
            },
            "auths": {
                "v2c": {"protocol": "snmp", "version": "2c", "community": COMMUNITY},
                "v3": {
                    "protocol": "snmp",
                    "version": 3,
                    "username": V3_USER,
                    "security_level": "authPriv",
                    "auth_protocol": "SHA",
                    "auth_password": V3_AUTH,
                    "priv_protocol": "AES",
                    "priv_password": V3_PRIV,
                },
            },
            "targets": [
                {"name": "ups-a", "address": f"{HOST_A}:{agents[0].port}", "protocol": "snmp",
                 "auth": "v2c"},
                {"name": "ups-b", "address": f"{HOST_B}:{agents[1].port}", "protocol": "snmp",
                 "auth": "v3"},
                {"name": "ups-c", "address": f"{HOST_C}:{agents[2].port}", "protocol": "snmp",
                 "auth": "v2c", "interval": "1s", "timeout": "0.9s"},
            ],
        }  # fmt: skip
        config = tmp / "hwpoller.yml"
        config.write_text(yaml.safe_dump(doc))
        log = tmp / "poller.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "poller", "--log.level", "debug", "run", "--config.file",
             str(config)],
            stdout=log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        running = Poller(proc, f"http://127.0.0.1:{port}/metrics", trap_port, log, [])
        try:
            running.wait(
                "every target polled once",
                lambda s: all(last_success(s, d) > 0 for d in ("ups-a", "ups-b", "ups-c")),
                STARTUP,
            )
            assert "receiving SNMP notifications" in running.log_text()
            yield running
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                assert proc.wait(20) == 0, running.log_text()
            finally:
                if proc.poll() is None:
                    proc.kill()
    finally:
        for agent in agents:
            agent.stop()


def send(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run snmptrap/snmpinform (MIBS empty: numeric OIDs only)."""
    env = {**os.environ, "MIBS": ""}
    return subprocess.run(
        [require(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=20, env=env,
        check=False,
    )  # fmt: skip


def repolled(poller: Poller, device: str, action: Callable[[], object]) -> Samples:
    """Run `action` (which sends a notification) and wait for the target's extra poll: its
    last success moves on and the notification is counted as polled."""
    time.sleep(2.2)  # the previous extra poll of this target is out of the 2s rate limit
    before = poller.scrape()
    action()
    return poller.wait(
        f"{device} to be re-polled",
        lambda s: (
            last_success(s, device) > last_success(before, device)
            and notifications(s, device) == notifications(before, device) + 1
        ),
        5.0,
    )


def test_v2c_trap_repolls_its_target_and_no_other(poller: Poller) -> None:
    before = poller.scrape()
    trap = ["snmptrap", "-v2c", "-c", COMMUNITY, f"--clientaddr={HOST_A}", poller.trap_address]
    after = repolled(poller, "ups-a", lambda: send(*trap, "", TRAP_OID))
    # Within about a second, not at the next 60s poll; and only ups-a.
    assert notifications(after, "ups-b") == notifications(before, "ups-b")
    assert notifications(after, "ups-c") == notifications(before, "ups-c")


def test_v1_trap_is_matched_by_its_agent_address(poller: Poller) -> None:
    # Sent from 127.0.0.1, which is no target; the v1 agent-addr field names ups-b.
    trap = ["snmptrap", "-v1", "-c", COMMUNITY, poller.trap_address, "1.3.6.1.4.1.318"]
    repolled(poller, "ups-b", lambda: send(*trap, HOST_B, "6", "5", ""))


def test_v2c_inform_is_acknowledged_and_repolls(poller: Poller) -> None:
    inform = ["snmpinform", "-v2c", "-c", COMMUNITY, f"--clientaddr={HOST_A}", "-t", "2"]
    results: list[subprocess.CompletedProcess[str]] = []
    repolled(poller, "ups-a", lambda: results.append(send(*inform, poller.trap_address, "",
                                                          TRAP_OID)))  # fmt: skip
    # snmpinform exits 0 only when the receiver acknowledged the inform.
    assert results[0].returncode == 0, results[0].stderr


V3 = ["-v3", "-u", V3_USER, "-l", "authPriv", "-a", "SHA", "-A", V3_AUTH, "-x", "AES"]


def test_v3_authpriv_trap_and_inform_repoll(poller: Poller) -> None:
    # A trap carries the sender's engine ID (here -e); the receiver learns it from ups-b.
    trap = [
        "snmptrap",
        *V3,
        "-X",
        V3_PRIV,
        "-e",
        "0x80001f88804e4f5449464945",
        f"--clientaddr={HOST_B}",
    ]
    repolled(poller, "ups-b", lambda: send(*trap, poller.trap_address, "", TRAP_OID))
    # An inform discovers the receiver's engine ID first, then is acknowledged.
    inform = ["snmpinform", *V3, "-X", V3_PRIV, f"--clientaddr={HOST_B}", "-t", "2"]
    results: list[subprocess.CompletedProcess[str]] = []
    repolled(poller, "ups-b", lambda: results.append(send(*inform, poller.trap_address, "",
                                                          TRAP_OID)))  # fmt: skip
    assert results[0].returncode == 0, results[0].stderr


def _udp_from(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


def test_bad_notifications_are_counted_logged_once_and_poll_nothing(poller: Poller) -> None:
    before = poller.scrape()
    target = poller.trap_address
    engine = "0x80001f88804e4f5449464945"
    bad_v3 = ["snmptrap", *V3, "-e", engine, f"--clientaddr={HOST_B}"]
    for _ in range(2):  # twice: each reason is logged once, counted every time
        send("snmptrap", "-v2c", "-c", "not-the-community", f"--clientaddr={HOST_A}", target,
             "", TRAP_OID)  # fmt: skip
        send("snmptrap", "-v2c", "-c", COMMUNITY, f"--clientaddr={UNKNOWN}", target, "",
             TRAP_OID)  # fmt: skip
        send(*bad_v3, "-X", "wrong-priv-password", target, "", TRAP_OID)
        send("snmptrap", "-v3", "-u", V3_USER, "-l", "authPriv", "-a", "SHA", "-A",
             "wrong-auth-password", "-x", "AES", "-X", V3_PRIV, "-e", engine,
             f"--clientaddr={HOST_B}", target, "", TRAP_OID)  # fmt: skip
        send("snmptrap", *V3[:2], "nobody", *V3[3:], "-X", V3_PRIV, "-e", engine,
             f"--clientaddr={HOST_B}", target, "", TRAP_OID)  # fmt: skip
    with _udp_from(HOST_A) as sock:
        host, port = target.split(":")
        good = trap_datagram(COMMUNITY, 1.0, TRAP_OID, "1.3.6.1.4.1.318.2.3.1.0", "x")
        for junk in (b"garbage", b"\x30\x03\x02\x01", good[:-7], b"\x30\x82\xff\xff" + good,
                     b"\x00" * 300):  # fmt: skip
            sock.sendto(junk, (host, int(port)))
    after = poller.wait(
        "every bad notification counted",
        lambda s: (
            rejected(s, "bad_community") - rejected(before, "bad_community") >= 2
            and rejected(s, "unknown_source") - rejected(before, "unknown_source") >= 2
            and rejected(s, "bad_auth") - rejected(before, "bad_auth") >= 2
            and rejected(s, "unknown_user") - rejected(before, "unknown_user") >= 2
            and rejected(s, "malformed") - rejected(before, "malformed") >= 5
        ),
        10.0,
    )
    # None of it polled anything; hwpoller kept going.
    for device in ("ups-a", "ups-b", "ups-c"):
        assert notifications(after, device) == notifications(before, device), device
        assert value(after, "hwpoller_up", device=device) == 1
    log = poller.log_text()
    for reason in ("bad_community", "unknown_source", "bad_auth", "unknown_user", "malformed"):
        assert log.count(f'rejected_total{{reason="{reason}"}}') == 1, (reason, log[-3000:])
    assert "Traceback" not in log


def test_flood_leaves_other_targets_on_schedule_and_is_counted(poller: Poller) -> None:
    """10,000 notifications in a few seconds, half from a known target, half from an unknown
    address: ups-c (polled every second) stays fresh and everything is counted."""
    before = poller.scrape()
    host, port = poller.trap_address.split(":")
    datagram = trap_datagram(COMMUNITY, 1.0, TRAP_OID, "1.3.6.1.4.1.318.2.3.1.0", "flood")
    stale: list[float] = []
    sent = 0
    with _udp_from(HOST_A) as known, _udp_from(UNKNOWN) as unknown:
        started = time.monotonic()
        for _burst in range(40):
            for _ in range(125):
                for sock in (known, unknown):
                    try:
                        sock.sendto(datagram, (host, int(port)))
                        sent += 1
                    except BlockingIOError:  # pragma: no cover - the local buffer is full
                        pass
            samples = poller.scrape()
            stale.append(time.time() - last_success(samples, "ups-c"))
            time.sleep(0.05)
        took = time.monotonic() - started
    assert sent == 10_000 and took < 15, (sent, took)
    # Freshness, not speed: ups-c's last success was never more than a few intervals old.
    after = poller.wait(
        "the flood to be processed",
        lambda s: time.time() - last_success(s, "ups-c") < 3,
        10.0,
    )
    assert max(stale) < 5, stale
    polled = notifications(after, "ups-a") - notifications(before, "ups-a")
    limited = notifications(after, "ups-a", "rate_limited") - notifications(
        before, "ups-a", "rate_limited"
    )
    counted = (
        polled
        + limited
        + sum(rejected(after, r) - rejected(before, r) for r in ("flood", "unknown_source"))
    )
    # At most one extra poll of ups-a per 2s, however many it sent.
    assert 1 <= polled <= took / 2 + 3, (polled, took)
    assert rejected(after, "flood") > rejected(before, "flood")
    # The kernel may drop datagrams the receiver never sees; what arrives is counted.
    assert counted >= 0.5 * sent, (counted, sent, select(after, "hwpoller_notifications_total"))
    assert value(after, "hwpoller_up", device="ups-c") == 1


def test_no_secret_in_log_or_metrics(poller: Poller) -> None:
    poller.scrape()
    outputs = [poller.log_text(), *poller.seen]
    for text in outputs:
        assert V3_AUTH not in text
        assert V3_PRIV not in text
        assert COMMUNITY not in text
    assert re.search(r"hwpoller_notifications_total\{device=\"ups-a\"", poller.seen[-1])
