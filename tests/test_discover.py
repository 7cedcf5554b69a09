"""`hwpoller discover`: scan, detect with the real drivers, write a config that polls.

Every packet goes to 127.0.0.0/8 only: the simulated room listens on 127.0.77.3 (a block no
other test uses) on ephemeral ports, which the scans name with --snmp-port & co.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from poller.app import load_all
from poller.cli import build_parser, main
from poller.config import parse_config
from poller.discover import command
from poller.discover.detect import Credentials, Discovered
from poller.discover.output import ProgressLine, render_config, target_names
from poller.discover.probes import Endpoint, Found, SnmpProbe
from poller.discover.ranges import MAX_ADDRESSES, RangeError, parse_ranges
from poller.discover.scan import Scanner
from poller.simulator.ipmi_bmc import USERS as IPMI_USERS
from poller.simulator.redfish_bmc import USERS as REDFISH_USERS
from poller.simulator.room import BMC_USER, COMMUNITY, RoomThread, SimulatedRoom

HOST = "127.0.77.3"
RANGE = "127.0.77.0/29"  # .1 to .6; only .3 answers
REDFISH_USER, REDFISH_PASSWORD = next(iter(REDFISH_USERS.items()))
IPMI_PASSWORD = IPMI_USERS[BMC_USER][0]
# What the drivers detect for each simulated device (the room's own config leaves profiles
# out, so this is the drivers' answer, not the simulator's claim).
# Long enough for the room's thread to answer on a loaded machine; silent addresses wait it
# out in parallel, so it costs about this much per scan.
PROBE_TIMEOUT = "1"
EXPECTED_SNMP = {"ups-1": "apc-ups+rfc1628-ups", "crac-1": "liebert-gp-env", "envmon-1": "netbotz"}


@dataclass(frozen=True)
class Secrets:
    """The secret files the scans are given."""

    community: Path
    ipmi: Path
    redfish: Path


@pytest.fixture(scope="module")
def room() -> Iterator[SimulatedRoom]:
    """The simulated room (SNMP agents, RMCP+ BMCs, Redfish BMCs) on HOST."""
    with RoomThread(redfish=True, notify=None, host=HOST) as started:
        yield started


@pytest.fixture
def secrets(tmp_path: Path) -> Secrets:
    """The room's credentials in files, as an operator keeps them."""
    found = Secrets(tmp_path / "community", tmp_path / "ipmi-password", tmp_path / "rf-password")
    found.community.write_text(COMMUNITY + "\n", encoding="utf-8")
    found.ipmi.write_text(IPMI_PASSWORD + "\n", encoding="utf-8")
    found.redfish.write_text(REDFISH_PASSWORD, encoding="utf-8")
    return found


def _ports(room: SimulatedRoom, protocol: str) -> str:
    return ",".join(str(d.port) for d in room.devices if d.protocol == protocol)


def _argv(room: SimulatedRoom, secrets: Secrets, *extra: str) -> list[str]:
    return [
        "discover",
        RANGE,
        "--community-file",
        str(secrets.community),
        "--snmp-port",
        _ports(room, "snmp"),
        "--ipmi-user",
        BMC_USER,
        "--ipmi-password-file",
        str(secrets.ipmi),
        "--ipmi-port",
        _ports(room, "ipmi"),
        "--redfish-user",
        REDFISH_USER,
        "--redfish-password-file",
        str(secrets.redfish),
        "--redfish-scheme",
        "http",
        "--redfish-port",
        _ports(room, "redfish"),
        "--timeout",
        PROBE_TIMEOUT,
        *extra,
    ]


def _expected(room: SimulatedRoom) -> dict[tuple[str, int], tuple[str, str]]:
    """(host, port) -> (protocol, profiles) for every simulated device."""
    makes = {s.name: s.vendor for s in room.model.servers.values()}
    out = {}
    for device in room.devices:
        if device.protocol == "snmp":
            profile = EXPECTED_SNMP[device.name]
        else:
            server = device.name.rsplit("-", 1)[0]
            profile = f"{device.protocol}-{makes[server]}"
        out[(device.host, device.port)] = (device.protocol, profile)
    return out


def _hwpoller(*args: str) -> subprocess.CompletedProcess[str]:
    """hwpoller in a process of its own (pyghmi and the IPMI worker start afresh)."""
    return subprocess.run(
        [sys.executable, "-m", "poller", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_discover_finds_every_device_and_the_config_polls_them(
    room: SimulatedRoom, secrets: Secrets, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "discovered.yml"
    assert main(_argv(room, secrets, "--config-out", str(out_file))) == 0
    captured = capsys.readouterr()
    # The summary: one row per device, each with its protocol and detected profile.
    rows = [line.split() for line in captured.out.splitlines()[1:] if line.startswith("127.")]
    seen = {}
    for row in rows:
        host, port = row[0].rsplit(":", 1)
        seen[(host, int(port))] = (row[1], row[2])
    assert seen == _expected(room)
    assert all(row[-1] == "ok" for row in rows), captured.out
    assert f"{len(room.devices)} found, {len(room.devices)} detected" in captured.out
    assert "\r" not in captured.err + captured.out  # no progress line off a terminal

    # The written file, read by the real loader: names, addresses, auths, profiles.
    text = out_file.read_text(encoding="utf-8")
    config, _ = load_all(out_file)
    assert len(config.targets) == len(room.devices)
    by_address = {t.address: t for t in config.targets}
    for (host, port), (protocol, profiles) in _expected(room).items():
        address = f"http://{host}:{port}" if protocol == "redfish" else f"{host}:{port}"
        target = by_address[address]
        assert target.protocol == protocol
        assert target.auth == f"discovered-{protocol}"
        assert target.labels == {"site": "", "room": "", "rack": ""}
        # A composed device keeps every matching profile: its profile: is left out.
        assert target.profile == (None if "+" in profiles else profiles)
    assert {t.name for t in config.targets} >= set(EXPECTED_SNMP)  # named by sysName
    assert f"community_file: {secrets.community}" in text
    assert f"password_file: {secrets.ipmi}" in text

    # Secrets: in no output and not in the file (only their paths are).
    for secret in (COMMUNITY, IPMI_PASSWORD, REDFISH_PASSWORD):
        assert secret not in captured.out + captured.err
        assert secret not in text

    checked = _hwpoller("check-config", str(out_file))
    assert checked.returncode == 0, checked.stderr
    assert f"OK ({len(room.devices)} targets, 3 auths)" in checked.stdout
    # Poll every target once with the written config (probe exits 1 if any is down).
    probed = _hwpoller("probe", "--config.file", str(out_file))
    assert probed.returncode == 0, probed.stdout + probed.stderr
    ups = next(t.name for t in config.targets if t.name == "ups-1")
    assert f"{ups}: up in" in probed.stdout
    assert probed.stdout.count(": up in ") == len(room.devices)
    assert "profile apc-ups," in probed.stdout  # detected at start, as discover said


def test_wrong_password_is_reported_never_printed(
    room: SimulatedRoom, secrets: Secrets, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canary = "canary-Pw-7f3e9b"
    secrets.ipmi.write_text(canary, encoding="utf-8")
    argv = [
        "discover",
        RANGE,
        "--ipmi-user",
        BMC_USER,
        "--ipmi-password-file",
        str(secrets.ipmi),
        "--ipmi-port",
        _ports(room, "ipmi"),
        "--timeout",
        PROBE_TIMEOUT,
        "--detect-timeout",
        "3",
    ]
    assert main(argv) == 0  # the config goes to stdout, the summary to stderr
    captured = capsys.readouterr()
    rows = [line for line in captured.err.splitlines() if line.startswith(HOST)]
    assert len(rows) == len(room.model.servers)
    # Each BMC rejected the login, and each says so (rejected logins at once used to end
    # now and then as pyghmi's own AttributeError, counted as internal).
    assert all(" auth: the BMC rejected the credentials" in row for row in rows), captured.err
    assert canary not in captured.out + captured.err
    # Still a config the loader takes: the BMCs are there; the password is to be fixed.
    config = parse_config(captured.out, "<stdout>")
    assert {t.protocol for t in config.targets} == {"ipmi"}
    assert all(t.profile is None for t in config.targets)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _args(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_progress_line_on_a_terminal(room: SimulatedRoom, secrets: Secrets) -> None:
    args = _args(
        [
            "discover",
            HOST,
            "--community-file",
            str(secrets.community),
            "--snmp-port",
            _ports(room, "snmp"),
            "--timeout",
            PROBE_TIMEOUT,
        ]
    )
    out, err = _Tty(), _Tty()
    assert command.run(args, out, err) == 0
    # No --config-out: the config on stdout; progress, then the table, on stderr.
    progress, _, table = err.getvalue().partition("ADDRESS")
    assert "\r[" in progress and "3/3 probes, 3 found" in progress
    assert progress.endswith("\r") and "\n" not in progress  # erased before the summary
    assert "envmon-1" in table and "\r" not in table
    assert "targets:" in out.getvalue() and "\r" not in out.getvalue()


def test_nothing_listening_is_not_reported(secrets: Secrets) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]  # free once closed: nothing listens there
    args = _args(
        [
            "discover",
            "127.0.77.8/30",
            "--community-file",
            str(secrets.community),
            "--snmp-port",
            str(port),
            "--timeout",
            "0.2",
        ]
    )
    out, err = io.StringIO(), io.StringIO()
    assert command.run(args, out, err) == 0
    assert "no device answered" in err.getvalue()
    assert "0 found" in err.getvalue()
    assert parse_config(out.getvalue()).targets == []


def test_range_beyond_the_cap_is_refused(
    secrets: Secrets, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code = main(["discover", "127.0.0.0/15", "--community-file", str(secrets.community)])
    err = capsys.readouterr().err
    assert code == 2
    assert "131,070 addresses, more than 65,536" in err and "--force" in err
    assert time.monotonic() - started < 5  # refused before scanning anything
    assert len(parse_ranges(["127.0.0.0/16"])) == 65_534 <= MAX_ADDRESSES
    assert len(parse_ranges(["127.0.0.0/15"], force=True)) == 131_070


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.77.5/24", "host bits set; did you mean 127.0.77.0/24"),
        ("localhost", "host names are not scanned"),
        ("127.0.77.9-127.0.77.2", "ends before it starts"),
        ("::1", "only IPv4"),
    ],
)
def test_bad_ranges_say_why(text: str, message: str) -> None:
    with pytest.raises(RangeError, match=message.replace(".", r"\.")):
        parse_ranges([text])


def test_ranges_merge_and_keep_only_what_was_given() -> None:
    found = parse_ranges(["127.0.77.0/30", "127.0.77.2", "127.0.77.10-127.0.77.11"])
    assert list(found) == ["127.0.77.1", "127.0.77.2", "127.0.77.10", "127.0.77.11"]
    assert "127.0.77.3" not in found  # the /30's broadcast address
    assert list(parse_ranges(["127.0.77.4/31"])) == ["127.0.77.4", "127.0.77.5"]


class _FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class _RecordingProbe:
    """Records when (on the fake clock) each probe started; answers for even last octets."""

    protocol = "snmp"

    def __init__(self, clock: _FakeClock, ports: tuple[int, ...]) -> None:
        self.ports = ports
        self.clock = clock
        self.sent: list[float] = []

    async def open(self) -> None:
        pass

    async def probe(self, host: str, port: int, seconds: float) -> Found | None:
        self.sent.append(self.clock())
        if int(host.rsplit(".", 1)[1]) % 2:
            return None
        return Found(Endpoint("snmp", host, port), {"sysName": host})

    async def close(self) -> None:
        pass


def test_rate_limit_holds_on_a_fake_clock() -> None:
    clock = _FakeClock()
    probe = _RecordingProbe(clock, (161, 1161))
    addresses = parse_ranges(["127.0.77.0/26"])  # 62 addresses x 2 ports
    progress: list[tuple[int, int, int]] = []
    scanner = Scanner(
        [probe], 50, 1.0, lambda *p: progress.append(p), clock=clock, sleep=clock.sleep
    )
    result = asyncio.run(scanner.run(addresses, len(addresses), deadline=clock() + 3600))
    assert result.complete and result.total == len(probe.sent) == 124
    # The i-th probe starts no sooner than i/50 s after the scan did: in any window of
    # t seconds, at most 50 t + 1 probes.
    for i, at in enumerate(probe.sent):
        assert at - 100.0 >= i / 50 - 1e-9
    assert probe.sent[-1] - 100.0 == pytest.approx(123 / 50)
    assert len(result.found) == 62 and progress[-1] == (124, 124, 62)


def test_max_time_stops_sending() -> None:
    clock = _FakeClock()
    probe = _RecordingProbe(clock, (161,))
    addresses = parse_ranges(["127.0.77.0/24"])
    scanner = Scanner([probe], 10, 1.0, clock=clock, sleep=clock.sleep)
    result = asyncio.run(scanner.run(addresses, len(addresses), deadline=clock() + 2.0))
    assert not result.complete and result.sent == len(probe.sent) <= 21


def test_rate_limit_holds_on_the_wire() -> None:
    """Real SNMP probes at 100/s to 20 listening sockets: arrivals are spread as the rate
    says (a lower bound only: a busy machine makes them slower, never faster)."""
    arrivals: list[float] = []
    socks = []
    for _ in range(20):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        socks.append(sock)

    async def scan() -> None:
        loop = asyncio.get_running_loop()
        for sock in socks:
            loop.add_reader(sock, lambda s=sock: (s.recv(2048), arrivals.append(time.monotonic())))
        ports = tuple(s.getsockname()[1] for s in socks)
        scanner = Scanner([SnmpProbe("x", "2c", ports)], 100, 0.05)
        await scanner.run(parse_ranges([HOST]), 1, time.monotonic() + 30)
        for sock in socks:
            loop.remove_reader(sock)
            with contextlib.suppress(BlockingIOError):  # arrived, its reader not yet run
                sock.recv(2048)
                arrivals.append(time.monotonic())

    try:
        asyncio.run(scan())
    finally:
        for sock in socks:
            sock.close()
    assert len(arrivals) == 20
    assert max(arrivals) - min(arrivals) >= 0.9 * 19 / 100


def test_names_are_safe_unique_and_the_file_cannot_be_injected(secrets: Secrets) -> None:
    hostile = "UPS 1\n  - name: evil\n    address: 127.0.77.99"
    found = [
        Found(Endpoint("snmp", "127.0.77.1", 161), {"sysName": hostile, "sysDescr": hostile}),
        Found(Endpoint("snmp", "127.0.77.2", 161), {"sysName": hostile}),
        Found(Endpoint("snmp", "127.0.77.3", 1161), {}),
        Found(Endpoint("ipmi", "127.0.77.4", 623), {}),
        Found(Endpoint("redfish", "127.0.77.5", 443), {"Name": "Root Service"}),
    ]
    names = target_names(found)
    assert list(names.values()) == [
        "ups-1-name-evil-address-127.0.77.99",
        "ups-1-name-evil-address-127.0.77.99-2",
        "snmp-127-0-77-3-1161",
        "ipmi-127-0-77-4",
        "redfish-127-0-77-5",
    ]
    discovered = [
        Discovered(found[0], names[found[0].endpoint], "127.0.77.1", ("apc-ups",), model=hostile),
        Discovered(
            found[1],
            names[found[1].endpoint],
            "127.0.77.2",
            reason="unsupported",
            message=f"no profile matches sysObjectID 1.2.3 ({hostile!r})",
        ),
    ]
    auths = Credentials(community_file=str(secrets.community)).auths()
    text = render_config(discovered, auths, "127.0.77.0/29\nevil: 1")
    config = parse_config(text)
    # The hostile model stays inside a comment; the unsupported device is commented out.
    assert [t.name for t in config.targets] == [names[found[0].endpoint]]
    assert config.targets[0].profile == "apc-ups"
    assert "# - name: ups-1-name-evil-address-127.0.77.99-2" in text


def test_progress_line_rewrites_one_line() -> None:
    stream = io.StringIO()
    ticks = iter([0.0, 0.01, 0.5, 0.6])
    line = ProgressLine(stream, clock=lambda: next(ticks))
    line.update(1, 10, 0)
    line.update(2, 10, 0)  # within 0.1 s of the last: not drawn
    line.update(5, 10, 1)
    line.update(10, 10, 2)
    line.finish()
    text = stream.getvalue()
    assert "2/10" not in text and "5/10 probes, 1 found" in text and "10/10" in text
    assert "\n" not in text and text.endswith("\r")


def test_usage_errors_are_refused_before_scanning(
    secrets: Secrets, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "hwpoller.yml"
    existing.write_text("targets: []\n", encoding="utf-8")
    cases = [
        ([HOST], "give credentials for at least one protocol"),
        ([HOST, "--ipmi-user", "monitor"], "--ipmi-user and --ipmi-password-file go together"),
        (
            [HOST, "--community-file", str(secrets.community), "--config-out", str(existing)],
            "pass --overwrite",
        ),
    ]
    for argv, message in cases:
        assert main(["discover", *argv]) == 2
        assert message in capsys.readouterr().err
    assert existing.read_text(encoding="utf-8") == "targets: []\n"
    missing = tmp_path / "no-such-file"
    assert main(["discover", HOST, "--community-file", str(missing)]) == 1
    assert f"community_file: cannot read {missing}" in capsys.readouterr().err
