"""The replay agent against snmpsim, both read by net-snmp's own clients.

Every project recording is walked through both agents with `snmpwalk` (GETNEXT) and
`snmpbulkwalk` (GETBULK); GETs of present and missing OIDs, GETNEXT past the end, GETBULK
with non-repeaters and v1 (noSuchName) are compared output for output. The one intended
difference: after the last record snmpsim (pysnmp) fills a GETBULK with endOfMibView, the
replay agent stops after the first such repetition (RFC 3416 4.2.3) unless fill_eom is set.
"""

from __future__ import annotations

import random
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from poller.simulator.replay import (
    Recording,
    ReplayAgent,
    ReplayProcess,
    Responder,
    build_request,
)
from poller.simulator.snmpsim import RECORDINGS, SnmpSim
from poller.snmp.ber import GET, GETBULK, GETNEXT, SET, ber_integer, ber_oid, parse_oid, tlv
from tests.conftest import TEST_RECORDINGS
from tests.util import require

pytestmark = pytest.mark.integration

FILES = sorted(RECORDINGS.glob("*.snmprec")) + sorted(TEST_RECORDINGS.glob("*.snmprec"))
NAMES = [path.stem for path in FILES]
EOM = "No more variables left in this MIB View (It is past the end of the MIB tree)"


def net_snmp(tool: str, port: int, community: str, *args: str, timeout: float = 2) -> str:
    """What a net-snmp client prints (stdout, stderr, exit status); args: options, then OIDs."""
    options = [arg for arg in args if arg.startswith("-")]
    oids = [arg for arg in args if not arg.startswith("-")]
    argv = [require(tool), "-On", "-t", str(timeout), "-r", "0", "-c", community, *options]
    proc = subprocess.run(
        [*argv, f"127.0.0.1:{port}", *oids], capture_output=True, text=True, timeout=60, check=False
    )
    # net-snmp ends hex strings with a space; strip it so expectations can be written here.
    lines = [line.rstrip() for line in f"{proc.stdout}{proc.stderr}".splitlines()]
    return "".join(f"{line}\n" for line in lines) + f"rc={proc.returncode}\n"


@pytest.fixture(scope="module")
def replay() -> Iterator[ReplayProcess]:
    """The replay agent serving the same recordings as the snmpsim fixture, in a subprocess."""
    with ReplayProcess(FILES) as agent:
        yield agent


@pytest.fixture(scope="module")
def replay_fill() -> Iterator[ReplayAgent]:
    """The replay agent in this process, filling GETBULK with endOfMibView like snmpsim."""
    with ReplayAgent(dict(zip(NAMES, FILES, strict=True)), fill_eom=True) as agent:
        yield agent


def test_every_recording_loads_without_skipped_lines() -> None:
    for path in FILES:
        rec = Recording.load(path)
        assert rec.skipped == 0, f"{path.name}: {rec.skipped} lines not understood"
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        assert len(rec.oids) == sum(1 for line in lines if not line.startswith("#"))


@pytest.mark.parametrize("community", ["unknown-device", "rfc1628-ups", "rittal-cmc-iii"])
def test_getnext_walk_matches_snmpsim(
    snmpsim: SnmpSim, replay: ReplayProcess, community: str
) -> None:
    # GETNEXT shares its lookup with GETBULK, walked below for every recording; snmpsim
    # answers ~1 ms per request, so a few recordings keep the suite fast.
    walk = net_snmp("snmpwalk", snmpsim.port, community, "-v2c", ".1")
    assert walk.count("\n") > 5 and "rc=0" in walk
    assert net_snmp("snmpwalk", replay.port, community, "-v2c", ".1") == walk


@pytest.mark.parametrize("community", NAMES)
def test_bulk_walk_matches_snmpsim(
    snmpsim: SnmpSim, replay: ReplayProcess, replay_fill: ReplayAgent, community: str
) -> None:
    bulk = net_snmp("snmpbulkwalk", snmpsim.port, community, "-v2c", "-Cr10", ".1")
    assert net_snmp("snmpbulkwalk", replay_fill.port, community, "-v2c", "-Cr10", ".1") == bulk
    ours = net_snmp("snmpbulkwalk", replay.port, community, "-v2c", "-Cr10", ".1")
    # The same records; where snmpsim repeats endOfMibView, the replay agent says it once.
    records = [line for line in bulk.splitlines() if EOM not in line]
    assert [line for line in ours.splitlines() if EOM not in line] == records
    assert ours.count(EOM) == 1 and bulk.count(EOM) >= 1


@pytest.mark.parametrize("community", ["unknown-device", "rfc1628-ups", "entity-sensor"])
def test_v1_walk_matches_snmpsim(snmpsim: SnmpSim, replay: ReplayProcess, community: str) -> None:
    walk = net_snmp("snmpwalk", snmpsim.port, community, "-v1", ".1")
    assert "End of MIB" in walk
    assert net_snmp("snmpwalk", replay.port, community, "-v1", ".1") == walk


@pytest.mark.parametrize("community", ["unknown-device", "rittal-cmc-iii"])
def test_get_getnext_getbulk_match_snmpsim(
    snmpsim: SnmpSim, replay: ReplayProcess, community: str
) -> None:
    oids = [".".join(map(str, oid)) for oid in Recording.load(FILES[NAMES.index(community)]).oids]
    first, middle, last = oids[0], oids[len(oids) // 2], oids[-1]
    missing = [
        f"{middle}.0",  # below a record
        middle.rsplit(".", 1)[0],  # a record's parent
        middle.rsplit(".", 1)[0] + ".99999",  # an instance that is not there
        "1.3.6.1.2.1.1.99.0",  # an object that is not there
        "1.3.6.1.9.1",  # past the end
        "0.0",
    ]
    requests = [
        ("snmpget", "-v2c", first, middle, last, *missing),
        ("snmpgetnext", "-v2c", last, "2.999", first, "0.0", middle.rsplit(".", 1)[0]),
        ("snmpbulkget", "-v2c", "-Cn1", "-Cr4", first, oids[-3], middle),
        ("snmpbulkget", "-v2c", "-Cn2", "-Cr2", first, middle, "1.3"),
        ("snmpget", "-v1", first, middle, last),
        ("snmpget", "-v1", first, missing[0], middle),  # noSuchName, index 2, then a retry
        ("snmpget", "-v1", "-Cf", first, last, missing[2]),
        ("snmpgetnext", "-v1", first, last),  # noSuchName: nothing after the last record
        ("snmpgetnext", "-v1", "-Cf", middle, "0.0"),
    ]
    for tool, *args in requests:
        want = net_snmp(tool, snmpsim.port, community, *args)
        assert net_snmp(tool, replay.port, community, *args) == want, (tool, args)


def test_unknown_community_gets_no_answer(replay: ReplayProcess) -> None:
    out = net_snmp("snmpget", replay.port, "public", "-v2c", "1.3.6.1.2.1.1.2.0", timeout=0.3)
    assert "Timeout" in out and "rc=1" in out


TYPES = b"""\
# every tag, out of order, with a duplicate, a variation tag and lines to skip
1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.4294967295.1
1.3.6.1.2.1.1.1.0|4|Types test \xc3\xa9
1.3.6.1.2.1.1.1.0|4|a duplicate: the first line wins
1.3.6.1.2.1.1.3.0|67|4294967295
1.3.6.1.2.1.1.4.0|4|
1.3.6.1.2.1.1.5.0|4x|00ff10
1.3.6.1.2.1.1.6.0|64|10.1.2.3
1.3.6.1.2.1.1.7.0|2|-2147483648
1.3.6.1.2.1.1.8.0|2|2147483647
1.3.6.1.2.1.1.9.0|65|4294967295

1.3.6.1.2.1.2.1.0|66|0
1.3.6.1.2.1.2.2.0|70|18446744073709551615
1.3.6.1.2.1.2.3.0|5|
1.3.6.1.2.1.2.4.0|68|abc
1.3.6.1.2.1.2.5.0|2:numeric|-1
1.3.6.1.2.1.2.6.0|2:numeric|min=1,max=5
1.3.6.1.2.1.2.7.0|2|2147483648
1.3.6.1.2.1.2.8.0|99|unknown tag
not an oid|2|1
1.3.6.1.4.1.2000000000.5|2|128
"""
TYPES_V2C = """\
.1.3.6.1.2.1.1.1.0 = Hex-STRING: 54 79 70 65 73 20 74 65 73 74 20 C3 A9
.1.3.6.1.2.1.1.2.0 = OID: .1.3.6.1.4.1.4294967295.1
.1.3.6.1.2.1.1.3.0 = Timeticks: (4294967295) 497 days, 2:27:52.95
.1.3.6.1.2.1.1.4.0 = ""
.1.3.6.1.2.1.1.5.0 = Hex-STRING: 00 FF 10
.1.3.6.1.2.1.1.6.0 = IpAddress: 10.1.2.3
.1.3.6.1.2.1.1.7.0 = INTEGER: -2147483648
.1.3.6.1.2.1.1.8.0 = INTEGER: 2147483647
.1.3.6.1.2.1.1.9.0 = Counter32: 4294967295
.1.3.6.1.2.1.2.1.0 = Gauge32: 0
.1.3.6.1.2.1.2.2.0 = Counter64: 18446744073709551615
.1.3.6.1.2.1.2.3.0 = NULL
.1.3.6.1.2.1.2.4.0 = OPAQUE: 61 62 63
.1.3.6.1.2.1.2.5.0 = INTEGER: -1
.1.3.6.1.4.1.2000000000.5 = INTEGER: 128
"""


def test_value_types_as_net_snmp_prints_them(tmp_path: Path) -> None:
    # The expected lines are what snmpsim serves for the same lines (checked by hand; snmpsim
    # stops a walk at a variation module it cannot load, so it cannot be compared here).
    path = tmp_path / "types.snmprec"
    path.write_bytes(TYPES)
    rec = Recording.load(path)
    assert rec.skipped == 4  # min=1,max=5; 2**31 as an Integer32; tag 99; no OID
    with ReplayAgent({"types": path}) as agent:
        walk = net_snmp("snmpwalk", agent.port, "types", "-v2c", ".1")
        assert walk == f"{TYPES_V2C}.1.3.6.1.4.1.2000000000.5 = {EOM}\nrc=0\n"
        bulk = net_snmp("snmpbulkwalk", agent.port, "types", "-v2c", "-Cr4", ".1")
        assert bulk == f"{TYPES_V2C}.1.3.6.1.4.1.2000000000.5 = {EOM}\nrc=0\n"
        # v1 has no Counter64: a walk skips it, a GET of it is noSuchName (RFC 2576 4.1.2.1).
        v1 = TYPES_V2C.replace(".1.3.6.1.2.1.2.2.0 = Counter64: 18446744073709551615\n", "")
        walk = net_snmp("snmpwalk", agent.port, "types", "-v1", ".1")
        assert walk == f"{v1}End of MIB\nrc=0\n"
        get = net_snmp("snmpget", agent.port, "types", "-v1", "-Cf", "1.3.6.1.2.1.2.2.0")
        assert "(noSuchName)" in get and "Failed object: .1.3.6.1.2.1.2.2.0" in get


def _big_table(rows: int) -> bytes:
    """An ENTITY-SENSOR device with `rows` celsius sensors."""
    lines = [
        "1.3.6.1.2.1.1.1.0|4|Big sensor chassis",
        "1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.99999.3.1",
        *(f"1.3.6.1.2.1.47.1.1.1.1.7.{i}|4|Sensor {i}" for i in range(1, rows + 1)),
        "1.3.6.1.2.1.47.1.4.1.0|67|4500",
    ]
    columns = {1: "8", 2: "9", 3: "0", 5: "1"}  # celsius, units, no decimals, ok
    for column in range(1, 6):
        for i in range(1, rows + 1):
            value = columns.get(column, str(15 + i % 20))
            lines.append(f"1.3.6.1.2.1.99.1.1.1.{column}.{i}|2|{value}")
    return ("\n".join(lines) + "\n").encode()


def test_ten_thousand_row_table(tmp_path: Path) -> None:
    path = tmp_path / "big-entity.snmprec"
    path.write_bytes(_big_table(10_000))
    with ReplayAgent({"big-entity": path}) as agent:
        out = net_snmp(
            "snmpbulkwalk", agent.port, "big-entity", "-v2c", "-Cr50", "1.3.6.1.2.1.99.1.1.1"
        )
        lines = out.splitlines()
        # 5 columns x 10,000 rows, then endOfMibView: the table is the recording's end.
        assert len(lines) == 50_002 and lines[-2:] == [
            f".1.3.6.1.2.1.99.1.1.1.5.10000 = {EOM}",
            "rc=0",
        ]
        assert lines[0] == ".1.3.6.1.2.1.99.1.1.1.1.1 = INTEGER: 8"
        assert lines[4 * 10_000 - 1] == ".1.3.6.1.2.1.99.1.1.1.4.10000 = INTEGER: 15"
        assert lines[-3] == ".1.3.6.1.2.1.99.1.1.1.5.10000 = INTEGER: 1"
        assert len(set(lines)) == len(lines)
        names = net_snmp(
            "snmpbulkwalk", agent.port, "big-entity", "-v2c", "-Cr50", "1.3.6.1.2.1.47"
        )
        assert names.count(' = STRING: "Sensor ') == 10_000
        assert names.endswith(".1.3.6.1.2.1.47.1.4.1.0 = Timeticks: (4500) 0:00:45.00\nrc=0\n")
        stats = agent.stats
    # 60,002 records and what the last GETBULK read past the subtree.
    assert stats.malformed == 0 and 60_002 <= stats.varbinds <= 60_002 + 50


def _hostile(valid: bytes) -> Iterator[bytes]:
    """Datagrams an agent must survive: noise, truncations, bit flips, bad BER, odd PDUs."""
    rng = random.Random(13)
    for _ in range(300):
        yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    for cut in range(len(valid)):
        yield valid[:cut]
    for _ in range(300):
        flipped = bytearray(valid)
        flipped[rng.randrange(len(valid))] ^= 1 << rng.randrange(8)
        yield bytes(flipped)
    yield b"\x30\x80" + valid[2:]  # indefinite length
    yield b"\x30\x84\xff\xff\xff\xff" + valid[2:]  # a length far past the datagram
    huge_arc = tlv(0x30, tlv(0x06, b"\x2b" + b"\xff" * 2000 + b"\x01") + b"\x05\x00")
    long_oid = tlv(0x30, tlv(0x06, b"\x2b" + b"\x01" * 300) + b"\x05\x00")
    for vb in (huge_arc, long_oid):
        pdu = ber_integer(7) + ber_integer(0) + ber_integer(0) + tlv(0x30, vb)
        yield tlv(0x30, ber_integer(1) + tlv(0x04, b"unknown-device") + tlv(GET, pdu))


def _ask(sock: socket.socket, port: int, request_id: int) -> bytes:
    """Send a valid GET of sysName.0 and wait for its answer (other answers are skipped)."""
    request = build_request("unknown-device", [parse_oid("1.3.6.1.2.1.1.5.0")], GET, 1, request_id)
    sock.sendto(request, ("127.0.0.1", port))
    while True:
        answer = sock.recv(65_535)
        if ber_integer(request_id) in answer:
            return answer


def test_malformed_datagrams_do_not_stop_the_agent() -> None:
    valid = build_request("unknown-device", [parse_oid("1.3.6.1.2.1.1.5.0")])
    oid = [parse_oid("1.3.6.1.2.1.1.5.0")]
    odd = [
        build_request("unknown-device", oid, GETBULK, version=0),  # no GETBULK in v1
        build_request("unknown-device", oid, SET),  # read-only: not served
        build_request("other", oid),  # wrong community: silence
    ]
    unknown = TEST_RECORDINGS / "unknown-device.snmprec"
    with (
        ReplayAgent({"unknown-device": unknown}) as agent,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        sock.settimeout(5)
        datagrams = [*_hostile(valid), *odd]
        # In batches, each followed by a valid GET that must be answered: the agent never
        # stops, and no batch overflows the socket buffer (every datagram is counted).
        for k in range(0, len(datagrams), 50):
            for datagram in datagrams[k : k + 50]:
                sock.sendto(datagram, ("127.0.0.1", agent.port))
            assert b"kvm-1" in _ask(sock, agent.port, 900_000 + k)
        out = net_snmp("snmpget", agent.port, "unknown-device", "-v2c", "1.3.6.1.2.1.1.5.0")
        assert out == '.1.3.6.1.2.1.1.5.0 = STRING: "kvm-1"\nrc=0\n'
        stats = agent.stats
    assert stats.malformed >= len(valid) + 300 + 2 + 2  # truncations, noise, bad lengths, OIDs
    assert stats.unsupported >= 2 and stats.wrong_community >= 1  # flips make traps too
    accounted = stats.requests + stats.malformed + stats.unsupported + stats.wrong_community
    assert accounted == len(datagrams) + len(range(0, len(datagrams), 50)) + 1


def test_an_internal_error_is_counted_and_the_agent_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    unknown = TEST_RECORDINGS / "unknown-device.snmprec"
    calls = []

    def broken_once(data: bytes) -> bytes | None:
        calls.append(data)
        if len(calls) <= 2:
            raise RuntimeError("a bug")
        return original(data)

    with ReplayAgent({"unknown-device": unknown}) as agent:
        responder = agent._responders[0]
        original = responder._answer
        monkeypatch.setattr(responder, "_answer", broken_once)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(b"first", ("127.0.0.1", agent.port))
            sock.sendto(b"second", ("127.0.0.1", agent.port))
            assert b"kvm-1" in _ask(sock, agent.port, 77)
        assert agent.stats.internal == 2 and agent.stats.requests == 1
    assert caplog.text.count("internal error") == 1  # logged once, with its traceback
    assert "RuntimeError: a bug" in caplog.text


def test_responses_are_capped() -> None:
    unknown = TEST_RECORDINGS / "unknown-device.snmprec"
    with ReplayAgent({"unknown-device": unknown}, max_size=300) as agent:
        many = ["1.3.6.1.2.1.1.1.0"] * 12
        out = net_snmp("snmpget", agent.port, "unknown-device", "-v2c", *many)
        assert "(tooBig)" in out and "rc=" in out
        # GETBULK answers with fewer repetitions instead; the walk is still complete.
        walk = net_snmp("snmpbulkwalk", agent.port, "unknown-device", "-v2c", "-Cr100", ".1")
        assert walk.count("\n") == 12 and walk.endswith(f"= {EOM}\nrc=0\n")
        assert agent.stats.too_big == 1


def test_per_port_mode_in_a_subprocess() -> None:
    files = [RECORDINGS / "apc-smartups.snmprec", RECORDINGS / "netbotz.snmprec"]
    sysoid = "1.3.6.1.2.1.1.2.0"
    with ReplayProcess(files, ports=5, per_port=True) as agent:
        assert len(set(agent.ports)) == 5
        assert agent.per_port == ["apc-smartups", "netbotz"] * 2 + ["apc-smartups"]
        want = {"apc-smartups": ".1.3.6.1.4.1.318.1.3.27", "netbotz": ".1.3.6.1.4.1.5528.100.20."}
        for port, community in zip(agent.ports, agent.per_port, strict=True):
            assert want[community] in net_snmp("snmpget", port, community, "-v2c", sysoid)
        # The other recording's community is not served there (two ports suffice).
        for port, other in zip(agent.ports[:2], ["netbotz", "apc-smartups"], strict=True):
            assert "Timeout" in net_snmp("snmpget", port, other, "-v2c", sysoid, timeout=0.2)
        stats = agent.stop()
    assert stats["requests"] >= 5 and stats["wrong_community"] == 2
    assert stats["cpu_seconds"] > 0
    with ReplayAgent(per_port=files[:1], ports=2, community="public") as thread_agent:
        for port in thread_agent.ports:
            assert want["apc-smartups"] in net_snmp("snmpget", port, "public", "-v2c", sysoid)


def test_a_process_that_cannot_start_says_why(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"replay agent did not start: replay: .*missing"):
        ReplayProcess([tmp_path / "missing.snmprec"]).start(timeout=20)


def test_request_ids_and_v1_counter64_through_the_responder() -> None:
    rec = Recording.parse(b"1.3.6.1.2.1.1.1.0|4|x\n1.3.6.1.2.1.1.2.0|70|5\n", "c")
    responder = Responder({"c": rec})
    for pdu in (GET, GETNEXT, GETBULK):
        for request_id in (0, -1, 2**31 - 1, -(2**31)):
            request = build_request("c", rec.oids[:1], pdu, request_id=request_id)
            answer = responder.answer(request)
            assert answer is not None and ber_integer(request_id) + b"\x02\x01\x00" in answer
    # On v1 the only record after sysDescr is a Counter64: noSuchName(2) at index 1, and the
    # request's varbinds sent back (RFC 1157 4.1.2).
    vbl = tlv(0x30, tlv(0x30, ber_oid(rec.oids[0]) + b"\x05\x00"))
    pdu = ber_integer(1) + ber_integer(2) + ber_integer(1) + vbl
    want = tlv(0x30, ber_integer(0) + tlv(0x04, b"c") + tlv(0xA2, pdu))
    assert responder.answer(build_request("c", rec.oids[:1], GETNEXT, version=0)) == want
    assert responder.answer(build_request("c", rec.oids[1:], GET, version=0)) == want.replace(
        ber_oid(rec.oids[0]), ber_oid(rec.oids[1])
    )
