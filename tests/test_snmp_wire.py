"""The SNMPv2c fast path: the BER codec (poller.snmp.ber) checked against pysnmp's, the
values it decodes against gufo-snmp's on every recorded object, the column walker against
net-snmp's snmpd and snmpwalk, and whole polls against the gufo-snmp path on every
recording (the project's and the shared corpus): same readings in fewer PDUs. Plus the
hostile cases: truncated and damaged datagrams, tooBig, OIDs of every encoded length."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api, rfc1902, rfc1905

from poller.driver import DriverContext, PollSpec
from poller.errors import DeviceError
from poller.model import DeviceData
from poller.profiles import ProfileSet, load_profiles
from poller.simulator.replay import ReplayAgent
from poller.simulator.replay import Responder as ReplayResponder
from poller.simulator.snmpsim import RECORDINGS, SnmpSim
from poller.snmp.auth import SnmpAuth
from poller.snmp.ber import (
    GETBULK,
    MalformedError,
    null_varbinds,
    oid_contents,
    parse_response,
    request,
)
from poller.snmp.driver import SnmpDriver
from poller.snmp.transport import GufoTransport
from poller.snmp.wire import WireTransport, _after, contents
from tests.conformance import corpus_dir
from tests.hostile import Responder
from tests.peers import V2_COMMUNITY, Snmpd
from tests.util import require, snmp_config

pytestmark = pytest.mark.integration

V2C = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]


def recorded_oids(path: Path) -> list[str]:
    """Every OID a .snmprec file records, in file order."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        oid = line.partition("|")[0].strip()
        if oid and not oid.startswith("#") and oid[0].isdigit():
            out.append(oid)
    return out


def transports(port: int, community: str) -> tuple[GufoTransport, WireTransport]:
    auth = SnmpAuth(protocol="snmp", version="2c", community=community)
    semaphore = asyncio.Semaphore(16)
    return (
        GufoTransport("127.0.0.1", port, auth, 2.0, 1, 10, semaphore),
        WireTransport("127.0.0.1", port, auth, 2.0, 1, 10, semaphore),
    )


# --- the codec -----------------------------------------------------------------------


def test_requests_decode_with_pysnmp() -> None:
    names = ["1.3.6.1.2.1.1.2.0", "1.3.6.1.4.1.318.1.1.1.2.2.1.0", "1.3.6.1.4.1.99.16384.4"]
    data = request(
        1, b"sec\xffret", GETBULK, 2**31 - 1, 0, 25, null_varbinds([contents(n) for n in names])
    )
    message, rest = decoder.decode(data, asn1Spec=V2C.Message())
    assert rest == b""
    assert int(message["version"]) == 1
    assert bytes(message["community"]) == b"sec\xffret"
    pdu = V2C.apiMessage.get_pdu(message)
    assert pdu.isSameTypeWith(V2C.GetBulkRequestPDU())
    assert int(V2C.apiPDU.get_request_id(pdu)) == 2**31 - 1
    assert int(V2C.apiBulkPDU.get_non_repeaters(pdu)) == 0
    assert int(V2C.apiBulkPDU.get_max_repetitions(pdu)) == 25
    assert [str(o) for o, _ in V2C.apiPDU.get_varbinds(pdu)] == names


def response(values: list[tuple[str, object]], request_id: int = 7, status: int = 0) -> bytes:
    """A v2c Response-PDU encoded by pysnmp."""
    message = V2C.Message()
    message["version"] = 1
    message["community"] = b"public"
    pdu = V2C.ResponsePDU()
    V2C.apiPDU.set_defaults(pdu)
    V2C.apiPDU.set_request_id(pdu, request_id)
    V2C.apiPDU.set_error_status(pdu, status)
    V2C.apiPDU.set_varbinds(pdu, values)
    V2C.apiMessage.set_pdu(message, pdu)
    return bytes(encoder.encode(message))


def test_values_of_every_type_decode() -> None:
    base = "1.3.6.1.4.1.99.1."
    values = [
        (base + "1", rfc1902.Integer32(-5)),
        (base + "2", rfc1902.OctetString(b"\x00ab\xff")),
        (base + "3", rfc1902.ObjectName("1.3.6.1.4.1.318.1.3.27")),
        (base + "4", rfc1902.Counter32(2**32 - 1)),
        (base + "5", rfc1902.Gauge32(42)),
        (base + "6", rfc1902.TimeTicks(123456)),
        (base + "7", rfc1902.Counter64(2**64 - 1)),
        (base + "8", rfc1902.IpAddress("10.1.2.254")),
        (base + "9", rfc1905.noSuchObject),
        (base + "10", rfc1905.noSuchInstance),
        (base + "11", rfc1905.endOfMibView),
        (base + "12", V2C.Null("")),
        (base + "13", rfc1902.Opaque(b"\x9f\x78\x04\x42\xf6\x00\x00")),
    ]
    got = parse_response(response(values, request_id=99, status=0), 1)
    assert got is not None
    rid, status, index, varbinds = got
    assert (rid, status, index) == (99, 0, 0)
    assert [contents(oid) for oid, _ in values] == [name for name, _, _ in varbinds]
    assert [value for _, _, value in varbinds] == [
        -5,
        b"\x00ab\xff",
        "1.3.6.1.4.1.318.1.3.27",
        2**32 - 1,
        42,
        123456,
        2**64 - 1,
        "10.1.2.254",
        None,
        None,
        None,
        None,
        b"\x9f\x78\x04\x42\xf6\x00\x00",
    ]
    assert [tag for _, tag, _ in varbinds][8:11] == [0x80, 0x81, 0x82]


def test_other_versions_and_pdus_are_not_answers() -> None:
    answer = response([("1.3.6.1.2.1.1.2.0", rfc1902.Integer32(1))])
    assert parse_response(answer, 0) is None  # an SNMPv1 client does not take a v2c answer
    trap = request(1, b"public", 0xA7, 1, 0, 0, b"")
    assert parse_response(trap, 1) is None


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"\x30",
        b"\x30\x82",  # the two bytes that panicked gufo-snmp 0.13.0's decoder
        b"\x30\x80\x00\x00",  # indefinite length
        b"\x30\x84\x00\x00\x00\x05\x02\x01\x01",  # a 4-octet length
        b"\x05\x00",
    ],
)
def test_garbage_is_malformed(damage: bytes) -> None:
    with pytest.raises(MalformedError):
        parse_response(damage, 1)


def test_every_truncation_is_refused() -> None:
    whole = response(
        [("1.3.6.1.4.1.318.1.1.1.2.2.1.0", rfc1902.Gauge32(100))] * 3
        + [("1.3.6.1.2.1.1.1.0", rfc1902.OctetString(b"x" * 300))]
    )
    assert parse_response(whole, 1) is not None
    for cut in range(len(whole)):
        with pytest.raises(MalformedError):
            parse_response(whole[:cut], 1)


def test_oversized_oids_and_arcs_are_malformed() -> None:
    from poller.snmp.ber import tlv

    value = b"\x02\x01\x01"
    long_name = oid_contents((1, 3, *([1] * 200)))
    with pytest.raises(MalformedError):
        parse_response(_wrap(tlv(0x30, tlv(0x06, long_name) + value)), 1)
    huge_arc = b"\x2b\x06\x8f\xff\xff\xff\xff\x7f"  # 1.3.6.(above 2**32)
    with pytest.raises(MalformedError):  # as an object's value
        parse_response(_wrap(tlv(0x30, tlv(0x06, b"\x2b\x06\x01") + tlv(0x06, huge_arc))), 1)
    # A name the decoder takes, whose row index the walker cannot read, is that column's
    # error: index_text refuses it.
    from poller.snmp.ber import index_text

    with pytest.raises(MalformedError):
        index_text(b"\x8f\xff\xff\xff\xff\x7f")
    assert index_text(b"\x01\x81\x00\x05") == "1.128.5"


def _wrap(vbl_contents: bytes) -> bytes:
    """A v2c Response (request-id 7) around a varbind list's contents, encoded by hand."""
    from poller.snmp.ber import ber_integer, tlv

    pdu = ber_integer(7) + ber_integer(0) + ber_integer(0) + tlv(0x30, vbl_contents)
    return tlv(0x30, ber_integer(1) + tlv(0x04, b"public") + tlv(0xA2, pdu))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.integers(0, 400), st.integers(0, 255))
def test_damaged_answers_raise_only_malformed(noise: bytes, at: int, byte: int) -> None:
    whole = bytearray(
        response(
            [
                ("1.3.6.1.4.1.318.1.1.1.2.2.1.0", rfc1902.Gauge32(100)),
                ("1.3.6.1.4.1.318.1.1.1.1.1.1.0", rfc1902.OctetString(b"Smart-UPS 1500")),
                ("1.3.6.1.2.1.1.2.0", rfc1902.ObjectName("1.3.6.1.4.1.318.1.3.27")),
            ]
        )
    )
    whole[at % len(whole)] = byte
    for data in (bytes(whole), bytes(whole) + noise, noise, b"\x30" + noise):
        with contextlib.suppress(MalformedError):
            parse_response(data, 1)


def test_oid_order_across_encoded_lengths() -> None:
    low, high = contents("1.3.6.1.4.1.99.16383"), contents("1.3.6.1.4.1.99.16384")
    assert low > high  # ff 7f sorts after 81 80 00 as bytes...
    assert _after(high, low)  # ...but 16384 follows 16383
    assert not _after(low, low)
    assert _after(contents("1.3.6.1.4.1.99.16383.1"), low)
    assert not _after(contents("1.3.6.1.4.1.99.5"), contents("1.3.6.1.4.1.99.6"))


# --- values against gufo-snmp, walks against snmpd ---------------------------------------


@pytest.mark.parametrize(
    "name", ["apc-emu", "netbotz", "hpe-ilo", "liebert-crac", "entity-sensor", "eaton-9px-emp"]
)
def test_every_recorded_value_reads_as_gufo_reads_it(snmpsim: SnmpSim, name: str) -> None:
    oids = recorded_oids(RECORDINGS / f"{name}.snmprec")
    assert len(oids) > 20
    gufo, wire = transports(snmpsim.port, name)

    async def go() -> tuple[dict[str, object], dict[str, object]]:
        try:
            return await gufo.get_many(oids), await wire.get_many(oids)
        finally:
            gufo.close()
            wire.close()

    theirs, ours = asyncio.run(go())
    assert len(theirs) > 20
    assert ours == theirs


@pytest.fixture(scope="module")
def snmpd() -> Iterator[Snmpd]:
    with Snmpd() as agent:
        yield agent


def snmpwalk(port: int, oid: str) -> dict[str, str]:
    """net-snmp's own walk of `oid`: numeric OID -> value as printed (-Oq -On -Oe)."""
    out = subprocess.run(
        [
            *(require("snmpbulkwalk"), "-v2c", "-c", V2_COMMUNITY),
            *("-On", "-Oq", "-Oe", "-Cr5", f"127.0.0.1:{port}", oid),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
        env={"MIBS": "", "PATH": "/usr/bin:/bin"},
    ).stdout
    rows = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        rows[key.lstrip(".")] = value.strip()
    return rows


IF_COLUMNS = [f"1.3.6.1.2.1.2.2.1.{c}" for c in (1, 2, 3, 4, 7)]
HR_COLUMNS = [f"1.3.6.1.2.1.25.2.3.1.{c}" for c in (1, 3, 4)]
OR_COLUMNS = ["1.3.6.1.2.1.1.9.1.2", "1.3.6.1.2.1.1.9.1.3"]


@pytest.mark.parametrize("budget", [50, 3, 1])
def test_column_walk_matches_snmpwalk(snmpd: Snmpd, budget: int) -> None:
    columns = IF_COLUMNS + HR_COLUMNS + OR_COLUMNS
    _, wire = transports(snmpd.port, V2_COMMUNITY)

    async def go() -> tuple[dict[str, dict[str, object]], dict[str, str], int]:
        try:
            rows, failed = await wire.walk_columns(columns, {}, budget, 2)
            return rows, failed, wire.requests
        finally:
            wire.close()

    rows, failed, requests = asyncio.run(go())
    assert failed == {}
    for column in columns:
        theirs = {k.removeprefix(column + "."): v for k, v in snmpwalk(snmpd.port, column).items()}
        assert theirs, column
        assert set(rows[column]) == set(theirs), column
        for index, value in rows[column].items():
            if isinstance(value, int):
                assert str(value) == theirs[index], (column, index)
            elif isinstance(value, str):  # an OID value
                assert theirs[index].lstrip(".") == value, (column, index)
    needed = sum(len(rows[c]) + 1 for c in columns)
    if budget == 50:
        # Every column in each GETBULK: a few PDUs for all ten columns, not ten walks.
        assert requests <= 4 + needed // 50, requests
    else:
        assert requests >= needed // budget


# Scalars riding a walk: present, absent, table instances, and one a GETNEXT cannot settle
# (sysORTable's column 2 read as a scalar: the OID before it is column 1, whose rows lie in
# between), which therefore goes by GET.
RIDERS = [
    "1.3.6.1.2.1.1.1.0",  # sysDescr
    "1.3.6.1.2.1.1.2.0",  # sysObjectID
    "1.3.6.1.2.1.1.99.0",  # nothing
    "1.3.6.1.2.1.2.2.1.2.1",  # ifDescr.1
    "1.3.6.1.2.1.2.2.1.2.999",  # no such row
    "1.3.6.1.2.1.1.9.1.3",  # a column itself: GETNEXT of sysORID lands on its rows
    "1.3.6.1.2.1.33.1.2.3.0",  # upsEstimatedMinutesRemaining (snmpd's override)
    "1.3.6.1.2.1.33.1.4.1.0",  # upsOutputSource
]


@pytest.mark.parametrize("budget", [50, 4])
def test_scalars_riding_a_walk_read_what_a_get_reads_against_snmpd(
    snmpd: Snmpd, budget: int
) -> None:
    columns = IF_COLUMNS + OR_COLUMNS
    _, plain = transports(snmpd.port, V2_COMMUNITY)
    _, riding = transports(snmpd.port, V2_COMMUNITY)

    async def go() -> tuple[object, ...]:
        try:
            values = await plain.get_many(RIDERS)
            rows, failed = await plain.walk_columns(columns, {}, budget, 2)
            separate = plain.requests
            got, got_rows, got_failed = await riding.fetch(RIDERS, columns, {}, budget, 2)
            return values, rows, failed, separate, got, got_rows, got_failed, riding.requests
        finally:
            plain.close()
            riding.close()

    values, rows, failed, separate, got, got_rows, got_failed, together = asyncio.run(go())
    assert set(values) == set(RIDERS) - {
        "1.3.6.1.2.1.1.99.0",
        "1.3.6.1.2.1.2.2.1.2.999",
        "1.3.6.1.2.1.1.9.1.3",
    }
    assert got == values
    assert (got_rows, got_failed) == (rows, failed)
    if budget == 50:
        # The probe (once per agent) and the GET of the unsettled one are extra; the GET of
        # the others is not.
        assert together <= separate + 1, (together, separate)


def test_scalars_riding_a_walk_read_what_a_get_reads_against_snmpsim(snmpsim: SnmpSim) -> None:
    path = RECORDINGS / "apc-smartups.snmprec"
    oids = recorded_oids(path)
    scalars = [*[o for o in oids if o.endswith(".0")][:20], "1.3.6.1.4.1.318.1.1.1.99.0"]
    columns = ["1.3.6.1.4.1.318.1.1.1.11.1", "1.3.6.1.2.1.1.9.1.3"]
    _, plain = transports(snmpsim.port, "apc-smartups")
    _, riding = transports(snmpsim.port, "apc-smartups")

    async def go() -> tuple[object, ...]:
        try:
            values = await plain.get_many(scalars)
            rows = await plain.walk_columns(columns, {}, 50, 1)
            got, *got_rows = await riding.fetch(scalars, columns, {}, 50, 1)
            return values, rows, got, tuple(got_rows), riding._riding
        finally:
            plain.close()
            riding.close()

    values, rows, got, got_rows, rode = asyncio.run(go())
    assert rode is True
    assert len(values) == 20
    assert got == values
    assert got_rows == rows


def test_an_agent_ignoring_non_repeaters_is_polled_without_them() -> None:
    """An agent that repeats the non-repeaters too would scramble every column's rows if the
    scalars rode along: the probe finds it out, and the scalars go by GET."""
    path = RECORDINGS / "apc-smartups.snmprec"
    from poller.simulator.replay import Recording

    replay = ReplayResponder({"public": Recording.load(path, "public")})
    peer = Responder().start()

    def answer(data: bytes) -> list[bytes]:
        got = replay.answer(ignoring_non_repeaters(data))
        return [got] if got else []

    peer.answer = answer
    profiles = load_profiles()
    try:

        async def go() -> tuple[object, object, int]:
            config = snmp_config(peer.port, "public", profile="apc-ups")
            spec = PollSpec.from_config(config, config.targets[0])
            driver = SnmpDriver(spec, DriverContext(profiles))
            try:
                first = await driver.poll()
                second = await driver.poll()
                return first, second, driver.requests_last_poll or 0
            finally:
                await driver.close()

        first, second, pdus = asyncio.run(go())
    finally:
        peer.stop()
    expected = reference_poll(path, profiles)
    assert first == expected
    assert second == expected
    assert pdus == 3  # a GET and two GETBULKs, as before riding


def test_an_empty_table_is_read_in_one_varbind_and_its_new_rows_are_seen(tmp_path: Path) -> None:
    """A table with no rows at the last poll is walked as its entry (one varbind while it
    stays empty, not one per column); rows appearing later are read in full, as a fresh
    poller reads them."""
    from poller.simulator.replay import Recording

    table = "1.3.6.1.4.1.318.1.1.10.2.3.2.1."  # iemStatusProbesEntry: the UPS's probes
    full = RECORDINGS / "apc-smartups.snmprec"
    empty = tmp_path / "no-probes.snmprec"
    lines = full.read_text().splitlines(keepends=True)
    empty.write_text("".join(line for line in lines if not line.startswith(table)))
    recordings = {
        name: Recording.load(path, "public") for name, path in (("empty", empty), ("full", full))
    }
    serving = {"now": "empty"}
    replays = {name: ReplayResponder({"public": rec}) for name, rec in recordings.items()}
    peer = Responder().start()

    def answer(data: bytes) -> list[bytes]:
        got = replays[serving["now"]].answer(data)
        return [got] if got else []

    peer.answer = answer
    profiles = load_profiles()
    try:

        async def go() -> tuple[object, ...]:
            config = snmp_config(peer.port, "public", profile="apc-ups")
            spec = PollSpec.from_config(config, config.targets[0])
            driver = SnmpDriver(spec, DriverContext(profiles))
            try:
                await driver.poll()
                assert driver._plan is not None
                walks = driver._column_walks(driver._plan)
                without = await driver.poll()
                serving["now"] = "full"
                with_rows = await driver.poll()
                again = await driver.poll()
                return walks, without, with_rows, again, driver._column_walks(driver._plan)
            finally:
                await driver.close()

        walks, without, with_rows, again, walks_after = asyncio.run(go())
    finally:
        peer.stop()
    entry = table.rstrip(".")
    assert any(isinstance(w, tuple) and w[0] == entry for w in walks)
    assert not any(isinstance(w, tuple) and w[0] == entry for w in walks_after)
    assert without == reference_poll(empty, profiles)
    assert with_rows == again == reference_poll(full, profiles)
    assert len(with_rows.readings) > len(without.readings)  # type: ignore[union-attr]


# --- whole polls: the wire path against the gufo-snmp path -------------------------------


def recordings(source: str) -> dict[str, Path]:
    """The project's own recordings, or (make conformance) the external corpus's."""
    if source == "project":
        return {p.stem: p for p in sorted(RECORDINGS.glob("*.snmprec"))}
    return {f"corpus-{p.stem}": p for p in sorted(corpus_dir().glob("*.snmprec"))}


@pytest.mark.parametrize(
    "source", ["project", pytest.param("corpus", marks=pytest.mark.conformance)]
)
def test_polls_read_what_the_gufo_path_reads_in_fewer_pdus(source: str) -> None:
    table = recordings(source)
    assert len(table) >= 15
    profiles = load_profiles()
    fewer = same = 0
    with ReplayAgent(table) as agent:

        async def poll(community: str, gufo: bool) -> tuple[object, int]:
            config = snmp_config(agent.port, community, name="device")
            spec = PollSpec.from_config(config, config.targets[0])
            transport = transports(agent.port, community)[0] if gufo else None
            driver = SnmpDriver(spec, DriverContext(profiles), transport)
            try:
                await driver.poll()  # detection, and the rows each table has
                data = await driver.poll()
            except DeviceError as exc:
                return f"{type(exc).__name__}: {exc}", 0
            finally:
                await driver.close()
            return data, driver.requests_last_poll or 0

        for community in table:
            theirs, their_pdus = asyncio.run(poll(community, True))
            ours, our_pdus = asyncio.run(poll(community, False))
            assert ours == theirs, community
            assert our_pdus <= their_pdus, (community, our_pdus, their_pdus)
            fewer += our_pdus < their_pdus
            same += our_pdus == their_pdus
    assert fewer >= len(table) // 2, (fewer, same)


def reference_poll(path: Path, profiles: ProfileSet) -> DeviceData:
    """A poll of the recording through a well-behaved replay agent (apc-ups profile)."""
    with ReplayAgent({"public": path}) as plain:
        config = snmp_config(plain.port, "public", profile="apc-ups")
        spec = PollSpec.from_config(config, config.targets[0])
        reference = SnmpDriver(spec, DriverContext(profiles))
        try:
            return asyncio.run(reference.poll())
        finally:
            asyncio.run(reference.close())


def test_too_big_bulk_answers_shrink_the_request_and_lose_nothing() -> None:
    """An agent that answers tooBig to any GETBULK asking for more than 12 varbinds (some
    cards do, instead of truncating as RFC 3416 says)."""
    path = RECORDINGS / "apc-smartups.snmprec"
    from poller.simulator.replay import Recording

    replay = ReplayResponder({"public": Recording.load(path, "public")})
    too_big = 0

    def answer(data: bytes) -> list[bytes]:
        nonlocal too_big
        message, _ = decoder.decode(data, asn1Spec=V2C.Message())
        pdu = V2C.apiMessage.get_pdu(message)
        if pdu.isSameTypeWith(V2C.GetBulkRequestPDU()):
            width = len(V2C.apiPDU.get_varbinds(pdu))
            riders = int(V2C.apiBulkPDU.get_non_repeaters(pdu))  # one varbind each
            if riders + (width - riders) * int(V2C.apiBulkPDU.get_max_repetitions(pdu)) > 12:
                too_big += 1
                reply = V2C.apiMessage.get_response(message)
                rsp = V2C.apiMessage.get_pdu(reply)
                V2C.apiPDU.set_error_status(rsp, 1)
                V2C.apiPDU.set_varbinds(rsp, [])
                return [bytes(encoder.encode(reply))]
        got = replay.answer(data)
        return [got] if got else []

    peer = Responder().start()
    peer.answer = answer
    try:
        profiles = load_profiles()

        async def go() -> tuple[object, object, int, int]:
            config = snmp_config(peer.port, "public", profile="apc-ups")
            spec = PollSpec.from_config(config, config.targets[0])
            driver = SnmpDriver(spec, DriverContext(profiles))
            try:
                first = await driver.poll()
                before = too_big
                second = await driver.poll()
                return first, second, before, too_big
            finally:
                await driver.close()

        first, second, before, after = asyncio.run(go())
    finally:
        peer.stop()
    expected = reference_poll(path, profiles)
    assert before >= 1  # the first poll met tooBig...
    assert after == before  # ...and the second asked for no more than the agent manages
    assert first == expected
    assert second == expected


def ignoring_non_repeaters(data: bytes) -> bytes:
    """The request as an agent that ignores GETBULK's non-repeaters reads it."""
    message, _ = decoder.decode(data, asn1Spec=V2C.Message())
    pdu = V2C.apiMessage.get_pdu(message)
    if not pdu.isSameTypeWith(V2C.GetBulkRequestPDU()):
        return data
    V2C.apiBulkPDU.set_non_repeaters(pdu, 0)
    return bytes(encoder.encode(message))


@pytest.mark.parametrize("rides", [True, False], ids=["scalars-ride", "agent-ignores-riders"])
def test_an_agent_failing_a_whole_get_over_one_object_loses_only_that_object(
    tmp_path: Path, rides: bool
) -> None:
    """SNMPv1 habits on a v2c agent: a GET naming one object the agent lacks answers
    noSuchName with its error-index, no values. Scalars riding a GETBULK as non-repeaters
    never meet it (a GETNEXT answers the next object). Where they cannot ride (an agent that
    ignores non-repeaters), the others are asked again without it, and the next poll does
    not ask for it at all."""
    from poller.simulator.replay import Recording

    lacking = "1.3.6.1.4.1.318.1.1.1.2.2.2.0"  # upsAdvBatteryTemperature
    path = tmp_path / "ups.snmprec"
    lines = (RECORDINGS / "apc-smartups.snmprec").read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if not line.startswith(lacking + "|")))
    replay = ReplayResponder({"public": Recording.load(path, "public")})
    known = set(recorded_oids(path))
    refused: list[str] = []

    def answer(data: bytes) -> list[bytes]:
        if not rides:
            data = ignoring_non_repeaters(data)
        message, _ = decoder.decode(data, asn1Spec=V2C.Message())
        pdu = V2C.apiMessage.get_pdu(message)
        if pdu.isSameTypeWith(V2C.GetRequestPDU()):
            names = [str(o) for o, _ in V2C.apiPDU.get_varbinds(pdu)]
            for position, name in enumerate(names, 1):
                if name not in known:
                    refused.append(name)
                    reply = V2C.apiMessage.get_response(message)
                    rsp = V2C.apiMessage.get_pdu(reply)
                    V2C.apiPDU.set_error_status(rsp, 2)
                    V2C.apiPDU.set_error_index(rsp, position)
                    return [bytes(encoder.encode(reply))]
        got = replay.answer(data)
        return [got] if got else []

    peer = Responder().start()
    peer.answer = answer
    profiles = load_profiles()
    try:

        async def go() -> tuple[object, object, int]:
            config = snmp_config(peer.port, "public", profile="apc-ups")
            spec = PollSpec.from_config(config, config.targets[0])
            driver = SnmpDriver(spec, DriverContext(profiles))
            try:
                first = await driver.poll()
                before = len(refused)
                second = await driver.poll()
                return first, second, len(refused) - before
            finally:
                await driver.close()

        first, second, again = asyncio.run(go())
    finally:
        peer.stop()
    expected = reference_poll(path, profiles)
    assert refused == ([] if rides else [lacking])
    assert again == 0
    assert first == expected
    assert second == expected


def test_snmp_client_chooses_the_v2c_transport() -> None:
    import yaml

    from poller.config import parse_config
    from poller.errors import ConfigError

    doc: dict[str, object] = {
        "settings": {"snmp_client": "gufo"},
        "auths": {
            "v2": {"protocol": "snmp", "version": "2c", "community": "x"},
            "v1": {"protocol": "snmp", "version": "1", "community": "x"},
        },
        "targets": [
            {"name": "a", "address": "127.0.0.1:1", "protocol": "snmp", "auth": "v2"},
            {
                "name": "b",
                "address": "127.0.0.1:1",
                "protocol": "snmp",
                "auth": "v2",
                "snmp_client": "native",
            },
            {"name": "c", "address": "127.0.0.1:1", "protocol": "snmp", "auth": "v1"},
        ],
    }
    config = parse_config(yaml.safe_dump(doc))
    profiles = load_profiles()
    kinds = []
    for target in config.targets:
        driver = SnmpDriver(PollSpec.from_config(config, target), DriverContext(profiles))
        kinds.append(type(driver._transport))
    assert kinds == [GufoTransport, WireTransport, GufoTransport]  # v1 is always gufo-snmp
    doc["settings"] = {"snmp_client": "pysnmp"}
    with pytest.raises(ConfigError, match=r"settings\.snmp_client: Input should be 'native'"):
        parse_config(yaml.safe_dump(doc))
