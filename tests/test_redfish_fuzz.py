"""Fuzz the Redfish driver (issue 28): generated services on 127.0.0.1 (aiohttp), polled
through the real driver, scheduler runner, exporter and status page. A service is a valid
skeleton (root, chassis, thermal, power, sensors) whose resources get hostile contents
(any JSON value at the properties the readers consult: surrogates, control characters,
huge numbers, NaN, wrong types, deep or wide trees), or whose answers are raw bytes, HTTP
errors or redirects; a second test answers with raw bytes in place of HTTP.

Whatever comes back, the poll ends within its timeout with readings or a device reason
(never `internal`: that is for hwpoller's own bugs), the exposition of whatever came out
encodes and passes `promtool check metrics`, /api/room encodes, and a healthy target
polled beside it in the same event loop is unaffected.

`make test` runs FUZZ_EXAMPLES examples (~10 s); HWPOLLER_FUZZ_EXAMPLES=N runs N (`make
fuzz`). Examples are derandomized: a failure is reproducible from the test name alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from poller.errors import REASONS
from poller.exporter import exposition
from poller.model import PollResult
from poller.simulator.redfish_bmc import bind_tcp, serve
from poller.statuspage import room_json
from poller.store import Store
from tests.test_redfish import redfish_config
from tests.test_redfish_hostile import R, service
from tests.test_redfish_hostile_input import Target, handler_for
from tests.util import promtool_check_metrics, readings

pytestmark = [pytest.mark.fault, pytest.mark.integration]

FUZZ_EXAMPLES = int(os.environ.get("HWPOLLER_FUZZ_EXAMPLES", "0")) or 150
RAW_EXAMPLES = max(20, FUZZ_EXAMPLES // 3)
# The poll timeout given to the fuzzed target, and the bound its poll must end within
# (the scheduler's deadline plus its cancel grace and a loaded machine's slack).
TIMEOUT = 2.0
POLL_BOUND = TIMEOUT + 2.0
# Reasons a hostile service may cause; internal is never one of them.
DEVICE_REASONS = sorted(set(REASONS) - {"internal"})

FUZZ = settings(
    deadline=None,  # timed by hand (POLL_BOUND), so a slow shared machine is not a failure
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Every character, lone surrogates included (hypothesis leaves Cs out unless asked).
CHARS = st.characters(codec=None, categories=None, exclude_categories=())
TEXT = st.text(CHARS, max_size=40) | st.sampled_from(
    ["", "Fan \ud800", "Inlet\u202eteltuO", "a\nb", "\x00\x1b[31m", "x" * 5000, "Cel", "OK"]
)
NUMBERS = (
    st.integers()
    | st.integers(min_value=10**300, max_value=10**420)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, -1, 21.5, 2**63, 1e308, -1e308])
)
# A plausible string with something in it that cannot be encoded, printed or shown.
BAD_TEXT = st.tuples(
    st.text(max_size=8),
    st.sampled_from(["\ud800", "\udfff", "\u202e", "\u2066", "\x00", "\n", "\x1b[2J", "\u2028"]),
    st.text(max_size=8),
).map("".join)
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
# What a hostile property holds: one_of draws its branches about evenly.
VALUES = st.one_of(BAD_TEXT, NUMBERS, TEXT, JSON, st.none())
# The properties the readers and the driver consult, hostile values go there.
KEYS = [
    "Id", "Name", "MemberId", "FanName", "@odata.id", "Reading", "ReadingCelsius",
    "ReadingUnits", "ReadingType", "PhysicalContext", "Status", "Thresholds",
    "UpperThresholdCritical", "LowerThresholdCritical", "DataSourceUri", "SpeedPercent",
    "DetectorState", "Members", "Members@odata.nextLink", "Manufacturer", "Model",
    "FirmwareVersion", "Temperatures", "Fans", "Voltages", "PowerControl", "PowerSupplies",
    "TemperatureReadingsCelsius", "TemperatureSummaryCelsius", "Links", "Chassis", "Sensors",
    "Thermal", "Power", "ThermalSubsystem", "PowerSubsystem", "LeakDetection",
    "LeakDetectors", "Managers", "ProtocolFeaturesSupported", "Vendor", "Product",
]  # fmt: skip


def skeleton() -> dict[str, Any]:
    """A service with every part the driver reads: the baseline's Sensors, a legacy Thermal
    and Power, a ThermalSubsystem on a second chassis, a manager."""
    resources: dict[str, Any] = json.loads(json.dumps(service([])))
    resources[R]["Managers"] = {"@odata.id": f"{R}/Managers"}
    resources[f"{R}/Managers"] = {"Members": [{"@odata.id": f"{R}/Managers/1"}]}
    resources[f"{R}/Managers/1"] = {"FirmwareVersion": "1.0"}
    resources[f"{R}/Chassis"]["Members"].append({"@odata.id": f"{R}/Chassis/2"})
    chassis = resources[f"{R}/Chassis/1"]
    chassis["Model"] = "M1"
    chassis["Thermal"] = {"@odata.id": f"{R}/Chassis/1/Thermal"}
    chassis["Power"] = {"@odata.id": f"{R}/Chassis/1/Power"}
    resources[f"{R}/Chassis/1/Thermal"] = {
        "Temperatures": [{"Name": "Legacy", "ReadingCelsius": 30, "UpperThresholdCritical": 80}],
        "Fans": [{"Name": "Fan1", "Reading": 5000, "ReadingUnits": "RPM"}],
    }
    resources[f"{R}/Chassis/1/Power"] = {
        "PowerSupplies": [{"Name": "PSU1", "Status": {"Health": "OK"}}],
        "PowerControl": [{"Name": "Total", "PowerConsumedWatts": 300}],
        "Voltages": [{"Name": "12V", "ReadingVolts": 12.1}],
    }
    c2 = f"{R}/Chassis/2"
    resources[c2] = {"Id": "2", "ThermalSubsystem": {"@odata.id": f"{c2}/ThermalSubsystem"}}
    resources[f"{c2}/ThermalSubsystem"] = {
        "ThermalMetrics": {"@odata.id": f"{c2}/ThermalSubsystem/ThermalMetrics"},
        "Fans": {"@odata.id": f"{c2}/ThermalSubsystem/Fans"},
        "LeakDetection": {"@odata.id": f"{c2}/ThermalSubsystem/LeakDetection"},
    }
    resources[f"{c2}/ThermalSubsystem/ThermalMetrics"] = {
        "TemperatureReadingsCelsius": [{"DeviceName": "Inlet", "Reading": 22}],
        "TemperatureSummaryCelsius": {"Exhaust": {"Reading": 35}},
    }
    resources[f"{c2}/ThermalSubsystem/Fans"] = {
        "Members": [{"@odata.id": f"{c2}/ThermalSubsystem/Fans/F1"}]
    }
    resources[f"{c2}/ThermalSubsystem/Fans/F1"] = {
        "@odata.id": f"{c2}/ThermalSubsystem/Fans/F1",
        "Id": "F1",
        "SpeedPercent": {"Reading": 40, "SpeedRPM": 4000},
        "Status": {"Health": "OK"},
    }
    resources[f"{c2}/ThermalSubsystem/LeakDetection"] = {
        "LeakDetectors": {"@odata.id": f"{c2}/ThermalSubsystem/LeakDetection/LeakDetectors"}
    }
    resources[f"{c2}/ThermalSubsystem/LeakDetection/LeakDetectors"] = {
        "Members": [{"@odata.id": f"{c2}/ThermalSubsystem/LeakDetection/LeakDetectors/L"}]
    }
    resources[f"{c2}/ThermalSubsystem/LeakDetection/LeakDetectors/L"] = {
        "Id": "L",
        "DetectorState": "OK",
        "Status": {"Health": "OK"},
    }
    return resources


PATHS = sorted(skeleton())
Route = tuple[str | int, ...]


def _objects(tree: Any, route: Route = ()) -> Iterator[tuple[Route, list[str]]]:
    """Every object in a resource: its route (keys and indexes) and its keys."""
    if isinstance(tree, dict):
        yield route, sorted(tree)
        for key, value in tree.items():
            yield from _objects(value, (*route, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from _objects(value, (*route, index))


# Where a hostile value can go: every object of every resource, with the keys it has (a
# value the readers consult) beside the others they know of (a property added).
SITES = [(path, route, keys) for path in PATHS for route, keys in _objects(skeleton()[path])]


def _site_mutation(site: tuple[str, Route, list[str]]) -> Any:
    path, route, keys = site
    key = st.sampled_from(keys) | st.sampled_from(KEYS) | TEXT if keys else st.sampled_from(KEYS)
    return st.tuples(st.just(path), st.just(route), key, VALUES)


MUTATION = st.sampled_from(SITES).flatmap(_site_mutation)


def _place(resources: dict[str, Any], path: str, route: Route, key: str, value: Any) -> None:
    """Set `key` to `value` in the object at `route` of a resource (if an earlier mutation
    replaced it, in the resource itself)."""
    tree = resources[path]
    for step in route:
        try:
            inner = tree[step]
        except (KeyError, IndexError, TypeError):
            break
        if not isinstance(inner, dict | list):
            break
        tree = inner
    if isinstance(tree, dict):
        tree[key] = value
    elif isinstance(tree, list):
        tree.append({key: value})


# Whole answers that are not the resource: bytes, broken JSON, HTTP errors, redirects.
ANSWER = st.one_of(
    st.binary(max_size=300).map(lambda b: ("bytes", b)),
    st.sampled_from([b"{", b"[]", b"null", b'"x"', b"{" * 100_000, b"1" * 5000, b"NaN"]).map(
        lambda b: ("bytes", b)
    ),
    st.sampled_from([204, 301, 302, 400, 401, 403, 404, 500, 503]).map(lambda s: ("status", s)),
)
SERVICE = st.fixed_dictionaries(
    {
        "mutations": st.lists(MUTATION, max_size=6),
        "answers": st.dictionaries(st.sampled_from(PATHS), ANSWER, max_size=2),
        # Arrays made long (a cap to hit): which path, which key, how many copies.
        "grow": st.none() | st.tuples(st.sampled_from(PATHS), st.integers(100, 3000)),
    }
)


def build(spec: dict[str, Any]) -> dict[str, object]:
    """The resources (values or raw handlers) of one generated service."""
    resources: dict[str, Any] = skeleton()
    for path, route, key, value in spec["mutations"]:
        _place(resources, path, route, key, value)
    if spec["grow"] is not None:
        path, count = spec["grow"]
        for key, value in list(resources[path].items()):
            if isinstance(value, list) and value:
                resources[path][key] = value * count
                break
    out: dict[str, object] = {}
    for path, body in resources.items():
        # Encoded here, as a BMC would send it: surrogates as \\ud800 escapes, NaN bare.
        out[path] = _bytes(json.dumps(body, allow_nan=True).encode())
    for path, (kind, what) in spec["answers"].items():
        out[path] = _bytes(what) if kind == "bytes" else _status(what)
    return out


def _bytes(body: bytes) -> Any:
    async def answer(_: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    return answer


def _status(status: int) -> Any:
    async def answer(_: web.Request) -> web.StreamResponse:
        headers = {"Location": f"{R}/Chassis"} if 300 <= status < 400 else {}
        return web.Response(status=status, headers=headers)

    return answer


class Bench:
    """One event loop for every example: the fuzzed service (its resources swapped per
    example), a healthy service and its target, polled beside each example; the results of
    every example in one store for a single promtool run at the end."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.resources: dict[str, object] = {}
        self.store = Store()
        self.examples = 0
        self.reasons: dict[str, int] = {}
        self.run(self._start())

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the bench's loop."""
        return self.loop.run_until_complete(coro)

    async def _start(self) -> None:
        async def fuzzed(request: web.Request) -> web.StreamResponse:
            return await handler_for(self.resources)(request)

        self.socks = [bind_tcp("127.0.0.1"), bind_tcp("127.0.0.1")]
        self.runners = [
            await serve(fuzzed, self.socks[0]),
            await serve(handler_for(service([])), self.socks[1]),
        ]
        self.healthy = Target(redfish_config(self.address(1), timeout="5s"))

    def address(self, index: int) -> str:
        """The URL of the fuzzed (0) or healthy (1) service."""
        return f"http://127.0.0.1:{self.socks[index].getsockname()[1]}"

    async def poll(self, address: str) -> tuple[PollResult, PollResult, float]:
        """Poll a fresh target at `address` beside the healthy one: both results, seconds."""
        target = Target(redfish_config(address, timeout=f"{TIMEOUT}s"))
        started = time.monotonic()
        try:
            fuzzed, healthy = await asyncio.gather(
                target.runner.poll_once(), self.healthy.runner.poll_once()
            )
            return fuzzed, healthy, time.monotonic() - started
        finally:
            await target.close()

    def check(self, fuzzed: PollResult, healthy: PollResult, took: float) -> None:
        """The properties every example must have."""
        assert took < POLL_BOUND, f"the poll took {took:.1f}s"
        assert fuzzed.success or fuzzed.reason in DEVICE_REASONS, (fuzzed.reason, fuzzed.message)
        assert readings(healthy)[("temperature", "T", "")] == 21.5
        self.examples += 1
        key = "ok" if fuzzed.success else fuzzed.reason
        self.reasons[key] = self.reasons.get(key, 0) + 1
        # Each example's result under a name of its own, so that one exposition holds all.
        name = f"fuzz-{self.examples}"
        one = Store()
        for store in (one, self.store):
            store.register(name, "redfish", fuzzed.labels)
            store.record(PollResult(**{**_fields(fuzzed), "target": name}))
        text = exposition(one).decode()  # the exporter encodes: any str must survive it
        list(text_string_to_metric_families(text))
        json.loads(room_json(one))

    def close(self) -> None:
        """Stop the services, check the exposition of every example with promtool."""

        async def stop() -> None:
            await self.healthy.close()
            for runner in self.runners:
                await runner.shutdown()
                await runner.cleanup()

        try:
            self.run(stop())
        finally:
            self.loop.close()
        if self.examples:
            promtool_check_metrics(exposition(self.store).decode())


def _fields(result: PollResult) -> dict[str, Any]:
    return {f: getattr(result, f) for f in result.__dataclass_fields__}


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    """The fuzz bench, shared by the examples of this module's tests."""
    found = Bench()
    yield found
    found.close()
    print(f"redfish fuzz: {found.examples} examples, outcomes {sorted(found.reasons.items())}")


@pytest.mark.slow(8)
@settings(FUZZ, max_examples=FUZZ_EXAMPLES)
@given(spec=SERVICE)
def test_generated_services(bench: Bench, spec: dict[str, Any]) -> None:
    bench.resources = build(spec)
    bench.check(*bench.run(bench.poll(bench.address(0))))


@contextlib.asynccontextmanager
async def _raw_server(answer: bytes) -> Any:
    """A TCP server on 127.0.0.1 that reads a request and answers `answer`, then closes."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(client, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


RAW = st.one_of(
    st.binary(max_size=400),
    st.binary(max_size=300).map(lambda b: b"HTTP/1.1 200 OK\r\n" + b),
    st.tuples(st.integers(-5, 2**40), st.binary(max_size=200)).map(
        lambda t: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % t
    ),
    st.binary(max_size=100).map(
        lambda b: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b
    ),
)


@pytest.mark.slow(4)
@settings(FUZZ, max_examples=RAW_EXAMPLES)
@given(answer=RAW)
def test_raw_bytes_in_place_of_http(bench: Bench, answer: bytes) -> None:
    async def scenario() -> tuple[PollResult, PollResult, float]:
        async with _raw_server(answer) as port:
            return await bench.poll(f"http://127.0.0.1:{port}")

    bench.check(*bench.run(scenario()))
