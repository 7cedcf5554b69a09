"""Fuzz the SNMP transport seam: generated reply datagrams, sent by a loopback peer, polled
through the real SNMP driver, profile and the scheduler's poll (TargetRunner.poll_once, as
`hwpoller run` polls). Whatever comes back, the poll ends by itself, quickly, with readings or
a reason other than `internal` (issues 10 and 28); the exposition of whatever came out encodes
and passes `promtool check metrics`; and a healthy target polled at the same time in the same
event loop is unaffected. HWPOLLER_FUZZ_EXAMPLES (make fuzz) sets the examples per test.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api, rfc1902, rfc1905

from poller.config import parse_config
from poller.driver import DriverContext, PollSpec
from poller.errors import REASONS
from poller.model import PollResult
from poller.profiles import ProfileSet, load_profiles
from poller.scheduler import TargetRunner
from poller.snmp.driver import SnmpDriver
from poller.store import Store
from tests.hostile import PANIC_REPLY, Responder
from tests.util import golden_exposition, promtool_check_metrics

pytestmark = [pytest.mark.fault, pytest.mark.integration]

V2C = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
# A poll of a peer that answers every request at once (or never) must end within this.
POLL_BOUND = 5.0

# SNMP values of every type an agent can put in a varbind.
VALUES = st.one_of(
    st.integers(-(2**31), 2**31 - 1).map(rfc1902.Integer32),
    st.binary(max_size=64).map(rfc1902.OctetString),
    st.lists(st.integers(0, 2**32 - 1), min_size=2, max_size=12)
    .filter(lambda arcs: arcs[0] <= 2 and (arcs[0] == 2 or arcs[1] < 40))
    .map(lambda arcs: rfc1902.ObjectName(tuple(arcs))),
    st.integers(0, 2**32 - 1).map(rfc1902.Counter32),
    st.integers(0, 2**32 - 1).map(rfc1902.Gauge32),
    st.integers(0, 2**32 - 1).map(rfc1902.TimeTicks),
    st.integers(0, 2**64 - 1).map(rfc1902.Counter64),
    st.binary(min_size=4, max_size=4).map(rfc1902.IpAddress),
    st.just(rfc1905.noSuchObject),
    st.just(rfc1905.noSuchInstance),
    st.just(rfc1905.endOfMibView),
    st.just(V2C.Null("")),
)
# How the reply's varbind OIDs relate to the requested ones: the same (GET), one below it
# (a walk step), before it (out of order), or somewhere else entirely.
OID_MODES = st.sampled_from(["same", "child", "before", "elsewhere"])
# Byte-level damage applied to the encoded reply.
MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "truncate", "insert", "delete", "length"]),
        st.integers(0, 2**16),
        st.integers(0, 255),
    ),
    max_size=3,
)


def build_reply(
    request: bytes,
    values: list[Any],
    oid_mode: str,
    error_status: int,
    mutations: list[tuple[str, int, int]],
) -> bytes:
    """A v2c Response to `request` (same request-id) carrying `values`, then damaged."""
    message, _ = decoder.decode(request, asn1Spec=V2C.Message())
    pdu = V2C.apiMessage.get_pdu(message)
    response = V2C.apiMessage.get_response(message)
    rsp_pdu = V2C.apiMessage.get_pdu(response)
    varbinds = []
    for i, (oid, _) in enumerate(V2C.apiPDU.get_varbinds(pdu)):
        arcs = tuple(oid)
        if oid_mode == "child":
            arcs = (*arcs, i + 1)
        elif oid_mode == "before":
            arcs = (*arcs[:-1], max(0, arcs[-1] - 1))
        elif oid_mode == "elsewhere":
            arcs = (1, 3, 6, 1, 4, 1, 99999, i)
        varbinds.append((rfc1902.ObjectName(arcs), values[i % len(values)]))
    V2C.apiPDU.set_varbinds(rsp_pdu, varbinds)
    if error_status:
        V2C.apiPDU.set_error_status(rsp_pdu, error_status)
        V2C.apiPDU.set_error_index(rsp_pdu, 1)
    data = bytearray(encoder.encode(response))
    for op, position, byte in mutations:
        at = position % max(1, len(data))
        if op == "flip":
            data[at] ^= byte or 0xFF
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data.insert(at, byte)
        elif op == "delete" and data:
            del data[at]
        elif op == "length" and len(data) > 1:
            data[1] = byte  # the outer SEQUENCE's length byte
    return bytes(data)


@pytest.fixture(scope="module")
def peer() -> Iterator[Responder]:
    """One loopback peer; each example sets what it answers."""
    with Responder() as started:
        assert isinstance(started, Responder)
        yield started


def _valid_answer(request: bytes) -> list[bytes]:
    return [build_reply(request, [rfc1902.Integer32(2)], "same", 0, [])]


@pytest.fixture(scope="module")
def healthy() -> Iterator[Responder]:
    """A well-behaved agent polled beside every fuzzed one, in the same event loop."""
    with Responder() as started:
        assert isinstance(started, Responder)
        started.answer = _valid_answer
        yield started


@pytest.fixture(scope="module")
def profiles() -> ProfileSet:
    """The built-in profiles, loaded once."""
    return load_profiles()


def _runner(name: str, port: int, version: str, profiles: ProfileSet) -> TargetRunner:
    doc = {
        "settings": {"timeout": "0.5s", "retries": 0, "interval": "1s"},
        "auths": {"a": {"protocol": "snmp", "version": version, "community": "public"}},
        "targets": [
            {
                "name": name,
                "address": f"127.0.0.1:{port}",
                "protocol": "snmp",
                "auth": "a",
                "profile": "rfc1628-ups",
            }
        ],
    }
    config = parse_config(yaml.safe_dump(doc))
    target = config.targets[0]
    spec = PollSpec.from_config(config, target)
    store = Store()
    store.register(target.name, target.protocol, target.labels)
    return TargetRunner(spec, {}, SnmpDriver(spec, DriverContext(profiles)), store, 0, 0)


def poll_against(
    peer: Responder,
    profiles: ProfileSet,
    answer: Callable[[bytes], list[bytes]],
    version: str = "2c",
    healthy: Responder | None = None,
) -> str:
    """Poll the peer once as `hwpoller run` does; the reason ("" for success). SNMPv2c goes
    through the project's codec (poller.snmp.wire), SNMPv1 through gufo-snmp's. With
    `healthy`, that agent is polled at the same time and must read as before."""
    fuzzed = _runner("fuzzed", peer.port, version, profiles)
    beside = _runner("healthy", healthy.port, version, profiles) if healthy else None
    peer.answer = answer

    async def go() -> tuple[PollResult, PollResult | None]:
        runners = [r for r in (fuzzed, beside) if r is not None]
        try:
            async with asyncio.timeout(POLL_BOUND):
                results = await asyncio.gather(*(r.poll_once() for r in runners))
        finally:
            for runner in runners:
                await runner.driver.close()
        return results[0], results[1] if beside else None

    started = time.monotonic()
    try:
        result, other = asyncio.run(go())
    finally:
        peer.answer = None
    assert not peer.failures, peer.failures  # the harness itself worked
    # No outer deadline is needed for the driver to finish on its own (TimeoutError from
    # asyncio.timeout above would fail the test as "another exception").
    assert time.monotonic() - started < POLL_BOUND
    if other is not None:
        assert other.success and other.data is not None and other.data.readings, other
    text = golden_exposition(result)  # renders and encodes whatever the device said
    if result.data is not None and result.data.readings:
        promtool_check_metrics(text)
    return "" if result.success else result.reason


# Examples per fuzzing test: 40 in make test (a few seconds), more under make fuzz.
EXAMPLES = int(os.environ.get("HWPOLLER_FUZZ_EXAMPLES", "40"))


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("version", ["1", "2c"])
@FUZZ
@given(datagrams=st.lists(st.binary(max_size=200), min_size=1, max_size=3))
def test_random_bytes(
    peer: Responder,
    healthy: Responder,
    profiles: ProfileSet,
    version: str,
    datagrams: list[bytes],
) -> None:
    # SNMPv1 is gufo-snmp's decoder; the healthy agent answers v2c, so it rides with 2c.
    beside = healthy if version == "2c" else None
    reason = poll_against(peer, profiles, lambda _request: datagrams, version, beside)
    assert reason in ("", *REASONS)
    assert reason != "internal"


@FUZZ
@given(
    values=st.lists(VALUES, min_size=1, max_size=4),
    oid_mode=OID_MODES,
    error_status=st.sampled_from([0, 0, 0, 1, 2, 5, 18]),
    mutations=MUTATIONS,
)
def test_mutated_valid_responses(
    peer: Responder,
    healthy: Responder,
    profiles: ProfileSet,
    values: list[Any],
    oid_mode: str,
    error_status: int,
    mutations: list[tuple[str, int, int]],
) -> None:
    def answer(request: bytes) -> list[bytes]:
        return [build_reply(request, values, oid_mode, error_status, mutations)]

    reason = poll_against(peer, profiles, answer, healthy=healthy)
    assert reason in ("", *REASONS)
    assert reason != "internal"


@pytest.mark.parametrize("version", ["1", "2c"])
def test_the_panicking_reply_is_a_protocol_error(
    peer: Responder, profiles: ProfileSet, version: str
) -> None:
    # The one case the fuzzer must not be lucky to find: gufo-snmp 0.13.0's decoder panics
    # (SNMPv1 here); the v2c codec must refuse the same two bytes.
    answer = lambda _request: [PANIC_REPLY]  # noqa: E731
    assert poll_against(peer, profiles, answer, version) == "protocol"


def test_a_valid_answer_polls_successfully(peer: Responder, profiles: ProfileSet) -> None:
    # The harness itself can succeed: correct replies give a successful poll.
    assert poll_against(peer, profiles, _valid_answer) == ""
