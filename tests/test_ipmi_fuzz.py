"""Fuzz the IPMI transport seam (issue 28): generated answers from loopback BMCs, polled
through the real driver (pyghmi session, SDR and sensor parsing, profile) with fresh
logins. Each example tampers with six BMCs at once, at a generated login or session
stage, with structure-aware damage (the honest answer, mutated; inside the session the
IPMI message is mutated before it is sealed, so it passes pyghmi's integrity check and
reaches the parsers) or raw bytes; a healthy simulated BMC is polled at the same time in
the same pyghmi loop. Every poll ends by itself with readings or a reason other than
`internal`, without a traceback, and the healthy BMC's poll succeeds.

HWPOLLER_FUZZ_EXAMPLES sets the number of examples per test (default 5: about 6 s each);
`make fuzz` runs more.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poller.errors import REASONS
from poller.ipmi import sdr
from poller.profiles import ProfileSet, load_profiles
from poller.simulator.rmcp import RMCP_HEADER, checksum
from tests.ipmi_peers import STAGES, Fleet, SimulatedBmc, UdpPeer, targets_config, tracebacks

pytestmark = [pytest.mark.fault, pytest.mark.integration]

EXAMPLES = int(os.environ.get("HWPOLLER_FUZZ_EXAMPLES", "5"))
FUZZED = 6  # tampered BMCs per example, polled at once beside the healthy one
# A poll's job deadline is 1 s; every poll of an example must be over within this.
POLL_BOUND = 6.0

# Byte-level damage: (operation, position, byte).
MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "truncate", "insert", "delete", "set", "extend"]),
        st.integers(0, 2**16),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)
# How one BMC misbehaves: at which stage, from which command answer on (inside the
# session: 0 is Set Session Privilege, 1 Get Device ID, then the SDR and the sensors),
# and how: mutate the honest answer, keep its framing but rewrite the IPMI message's data
# (checksums made right again, so the parsers see it), or raw bytes.
PLANS = st.fixed_dictionaries(
    {
        "stage": st.sampled_from(STAGES),
        "from_command": st.integers(0, 24),
        "how": st.one_of(
            st.tuples(st.just("mutate"), MUTATIONS),
            st.tuples(st.just("data"), st.binary(max_size=40), st.integers(0, 255)),
            st.tuples(st.just("raw"), st.binary(max_size=96), st.booleans()),
        ),
    }
)


def mutate(data: bytes, mutations: list[tuple[str, int, int]], start: int = 0) -> bytes:
    """`data` with the mutations applied at positions from `start` on."""
    out = bytearray(data)
    for op, position, byte in mutations:
        span = max(1, len(out) - start)
        at = min(len(out), start + position % span)
        if op == "flip" and at < len(out):
            out[at] ^= byte or 0xFF
        elif op == "truncate":
            del out[at:]
        elif op == "insert":
            out.insert(at, byte)
        elif op == "delete" and at < len(out):
            del out[at]
        elif op == "set" and at < len(out):
            out[at] = byte
        elif op == "extend":
            out += bytes([byte]) * (position % 64)
    return bytes(out)


def with_data(message: bytes, data: bytes, code: int) -> bytes:
    """An IPMI response message with another completion code and data, checksums right."""
    if len(message) < 7:
        return message
    body = message[3:6] + bytes([code]) + data
    return message[:3] + body + bytes([checksum(body)])


def tamper_for(plan: dict[str, Any]) -> Callable[[str, bytes], list[bytes]]:
    """The SimulatedBmc tamper hook that carries out one plan."""
    commands = 0

    def tamper(stage: str, reply: bytes) -> list[bytes]:
        nonlocal commands
        if stage != plan["stage"]:
            return [reply]
        if stage == "command":
            commands += 1
            if commands <= plan["from_command"]:
                return [reply]
        how = plan["how"]
        if how[0] == "mutate":
            # Login answers: damage from the RMCP+ payload on (the header decides only
            # which handler runs); session messages: anywhere in the IPMI message.
            return [mutate(reply, how[1], 0 if stage == "command" else 16)]
        if how[0] == "data":
            if stage == "command":
                return [with_data(reply, how[1], how[2])]
            return [reply[:14] + len(how[1]).to_bytes(2, "little") + how[1]]
        raw, framed = how[1], how[2]
        return [RMCP_HEADER + raw if framed and stage != "command" else raw]

    return tamper


class Bench:
    """The fuzzed BMCs, the healthy one and the fleet polling them, on one event loop."""

    def __init__(self, profiles: ProfileSet) -> None:
        self.fuzzed = [SimulatedBmc() for _ in range(FUZZED)]
        self.healthy = SimulatedBmc()
        self.peers = [UdpPeer(b.answer).start() for b in [*self.fuzzed, self.healthy]]
        ports = {f"fuzzed{i}": p.port for i, p in enumerate(self.peers[:FUZZED])}
        ports["healthy"] = self.peers[-1].port
        # The healthy BMC gets a job deadline of 2 s, not 1 s: its login shares two busy
        # cores with the other test workers and six fuzzed logins (it takes ~0.1 s).
        timeouts = {name: "4s" if name == "healthy" else "2s" for name in ports}
        self.fleet = Fleet(targets_config(ports, timeout=timeouts, threads=128), profiles)
        self.loop = asyncio.new_event_loop()
        self.cases = 0
        self.outcomes: dict[str, int] = {}

    def run(self, plans: list[dict[str, Any]]) -> dict[str, Any]:
        """One round with these plans; the results by target name."""
        for bmc, peer, plan in zip(self.fuzzed, self.peers[:FUZZED], plans, strict=True):
            bmc.tamper = tamper_for(plan)
            sdr.forget("127.0.0.1", peer.port)  # so every example parses the SDR it is sent

        async def go() -> dict[str, Any]:
            async with asyncio.timeout(POLL_BOUND):
                return await self.fleet.round()

        results = self.loop.run_until_complete(go())
        for name, result in results.items():
            if name.startswith("fuzzed"):
                self.cases += 1
                key = result.reason or "ok"
                self.outcomes[key] = self.outcomes.get(key, 0) + 1
        return results

    def close(self) -> None:
        """Close the fleet, the loop and the peers."""
        self.loop.run_until_complete(self.fleet.close())
        self.loop.close()
        for peer in self.peers:
            peer.close()


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    """One bench for the module; each example sets what its BMCs say."""
    started = Bench(load_profiles())
    yield started
    print(f"IPMI fuzz: {started.cases} cases, outcomes {started.outcomes}")
    started.close()


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def check(bench: Bench, results: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """Every fuzzed poll ended with readings or a non-internal reason; healthy one polled."""
    healthy = results["healthy"]
    assert healthy.success, (healthy.reason, healthy.message)
    for name, result in results.items():
        assert result.success or result.reason in REASONS, (name, result.reason)
        assert result.reason != "internal", (name, result.message)
    assert not tracebacks(caplog.records), tracebacks(caplog.records)
    assert not [p.failures for p in bench.peers if p.failures]  # the harness itself worked


@FUZZ
@given(plans=st.lists(PLANS, min_size=FUZZED, max_size=FUZZED))
def test_generated_answers(
    bench: Bench, caplog: pytest.LogCaptureFixture, plans: list[dict[str, Any]]
) -> None:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        results = bench.run(plans)
    check(bench, results, caplog)


@FUZZ
@given(
    plans=st.lists(
        st.fixed_dictionaries(
            {
                "stage": st.sampled_from(STAGES),
                "from_command": st.integers(0, 24),
                "how": st.tuples(st.just("raw"), st.binary(max_size=200), st.booleans()),
            }
        ),
        min_size=FUZZED,
        max_size=FUZZED,
    )
)
def test_raw_bytes(
    bench: Bench, caplog: pytest.LogCaptureFixture, plans: list[dict[str, Any]]
) -> None:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        results = bench.run(plans)
    check(bench, results, caplog)


def test_the_bench_polls_untampered_bmcs(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    # The harness can succeed: with honest answers every BMC polls, readings and all.
    honest = {"stage": "command", "from_command": 10**6, "how": ("raw", b"", False)}
    results = bench.run([honest] * FUZZED)
    for result in results.values():
        assert result.success, (result.target, result.reason, result.message)
        assert result.data is not None and result.data.readings
    check(bench, results, caplog)
