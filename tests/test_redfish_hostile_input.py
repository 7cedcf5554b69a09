"""Hostile Redfish services, round 2 (issue 28): huge arrays, unencodable strings, sessions
refused after login, out-of-range numbers, paged collections and memory. Every hostile
service is polled beside a healthy one in the same process (and event loop), on
127.0.0.1 ephemeral ports, through the real driver and scheduler code."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from poller.config import Config
from poller.driver import DriverContext, PollSpec, driver_for
from poller.exporter import exposition
from poller.model import PollResult
from poller.profiles import ProfileSet, load_profiles
from poller.redfish import client as redfish_client
from poller.redfish.driver import MAX_PAGES, MAX_READINGS
from poller.redfish.readings import MAX_ARRAY
from poller.scheduler import TargetRunner
from poller.simulator.redfish_bmc import bind_tcp, serve
from poller.statuspage import page, room_json
from poller.store import Store
from tests.test_redfish import redfish_config
from tests.test_redfish_hostile import R, raw, service
from tests.util import poll_once, promtool_check_metrics, readings

pytestmark = pytest.mark.integration

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Resources = Mapping[str, object]


def handler_for(resources: Resources) -> Handler:
    """An aiohttp handler serving a dict of resources by path (values, or handlers)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        found = resources.get(request.path.rstrip("/"))
        if callable(found):
            answer: web.StreamResponse = await found(request)
            return answer
        if found is None:
            return web.json_response({}, status=404)
        return web.json_response(found)

    return handler


class Polled:
    """What polling a hostile service beside a healthy one gave."""

    def __init__(self, hostile: PollResult, healthy: PollResult, stall: float) -> None:
        self.hostile = hostile
        self.healthy = healthy
        self.stall = stall  # the longest the event loop went without running a ready task

    def exposition(self) -> str:
        """/metrics with both results in one store (the exporter's own encode included)."""
        store = Store()
        for result in (self.hostile, self.healthy):
            store.register(result.target, result.protocol, result.labels)
            store.record(result)
        return exposition(store).decode()


async def _watch(stalls: list[float]) -> None:
    while True:
        started = time.monotonic()
        await asyncio.sleep(0.005)
        stalls.append(time.monotonic() - started - 0.005)


def poll_beside(
    hostile: Resources | Handler, timeout: str = "10s", polls: int = 1
) -> tuple[Polled, int]:
    """Serve `hostile` and the healthy baseline service; poll both concurrently `polls`
    times; the last results, the event loop's longest stall and the hostile port."""
    hostile_handler = hostile if callable(hostile) else handler_for(hostile)

    async def scenario() -> tuple[Polled, int]:
        socks = [bind_tcp("127.0.0.1"), bind_tcp("127.0.0.1")]
        runners = [
            await serve(hostile_handler, socks[0]),
            await serve(handler_for(service([])), socks[1]),
        ]
        stalls: list[float] = [0.0]
        watcher = asyncio.create_task(_watch(stalls))
        try:
            ports = [s.getsockname()[1] for s in socks]
            targets = [
                Target(redfish_config(f"http://127.0.0.1:{p}", timeout=timeout)) for p in ports
            ]
            try:
                for _ in range(polls):
                    bad, good = await asyncio.gather(*(t.runner.poll_once() for t in targets))
            finally:
                for target in targets:
                    await target.close()
            # Both configs name their target rf-1; one store needs two names.
            return Polled(bad, replace(good, target="rf-healthy"), max(stalls)), ports[0]
        finally:
            watcher.cancel()
            for runner in runners:
                await runner.shutdown()
                await runner.cleanup()

    return asyncio.run(scenario())


class Target:
    """One configured target with its real driver and scheduler runner, kept across polls
    (tests.util.poll_once makes a new driver per poll)."""

    def __init__(self, config: Config) -> None:
        target = config.targets[0]
        self.spec = PollSpec.from_config(config, target)
        self.context = DriverContext(_profiles())
        self.store = Store()
        self.store.register(target.name, target.protocol, target.labels)
        driver = driver_for(self.spec, self.context)
        self.runner = TargetRunner(self.spec, dict(target.labels), driver, self.store, 0, 0)

    async def close(self) -> None:
        """What the scheduler does when it stops: close the driver (log out)."""
        await self.runner.driver.close()
        self.context.shutdown()


@functools.cache
def _profiles() -> ProfileSet:
    return load_profiles()


def healthy_unaffected(polled: Polled) -> None:
    """The healthy target polled as it always does, however the hostile one behaved."""
    assert readings(polled.healthy)[("temperature", "T", "")] == 21.5
    assert polled.healthy.data is not None and polled.healthy.data.partial_errors == ()
    assert polled.healthy.duration_seconds < 3.0
    assert polled.hostile.reason != "internal", polled.hostile.message


def with_chassis(**links: str) -> dict[str, object]:
    """The baseline chassis with extra navigation links (e.g. Thermal="Chassis/1/Thermal")."""
    chassis = json.loads(json.dumps(service([])[f"{R}/Chassis/1"]))
    chassis.update({k: {"@odata.id": f"{R}/{v}"} for k, v in links.items()})
    return chassis


def thermal_body(entries: int) -> bytes:
    """A legacy Thermal resource whose Temperatures[] has `entries` small members (the
    issue's BMC answered 100,000 of them in 3.8 MB)."""
    members = ",".join(f'{{"Name":"T{i}","ReadingCelsius":{20 + i % 9}}}' for i in range(entries))
    return f'{{"Temperatures":[{members}]}}'.encode()


# -- 2. arrays inside one resource ---------------------------------------------------------


def test_long_array_is_read_up_to_its_cap_and_the_rest_is_partial() -> None:
    hostile = service([], **{"/Chassis/1": with_chassis(Thermal="Chassis/1/Thermal"),
                             "/Chassis/1/Thermal": raw(thermal_body(2000))})  # fmt: skip
    polled, _ = poll_beside(hostile)
    got = readings(polled.hostile)
    assert sum(1 for k in got if k[0] == "temperature" and k[1].startswith("T")) == MAX_ARRAY + 1
    assert got[("temperature", "T", "")] == 21.5  # the Sensors collection still read
    assert polled.hostile.data is not None
    assert polled.hostile.data.partial_errors == (
        f"chassis 1: Temperatures: 2000 entries, only the first {MAX_ARRAY} read",
    )
    healthy_unaffected(polled)


def test_a_huge_answer_costs_its_part_only_and_never_stalls_the_loop() -> None:
    body = thermal_body(100_000)
    assert 3_500_000 < len(body) < 4 * 1024 * 1024  # the answer, under the body cap
    hostile = service([], **{"/Chassis/1": with_chassis(Thermal="Chassis/1/Thermal"),
                             "/Chassis/1/Thermal": raw(body)})  # fmt: skip
    polled, _ = poll_beside(hostile)
    got = readings(polled.hostile)
    assert got[("temperature", "T", "")] == 21.5
    assert polled.hostile.data is not None
    (error,) = polled.hostile.data.partial_errors
    assert error.startswith("chassis 1 thermal: /redfish/v1/Chassis/1/Thermal: the answer holds")
    # Decoding 100,000 objects and making 100,000 readings took seconds of event loop time
    # in one piece; a rejected answer costs a scan of its bytes.
    assert polled.stall < 0.5, polled.stall
    assert polled.exposition().count("\n") < 200
    healthy_unaffected(polled)


def test_readings_per_poll_are_capped() -> None:
    # 12 chassis of 500 temperatures with two limits each: 18,000 readings, each array
    # under its cap.
    chassis = {"Members": [{"@odata.id": f"{R}/Chassis/{i}"} for i in range(12)]}
    parts: dict[str, object] = {"/Chassis": chassis}
    members = [
        {"Name": f"T{i}", "ReadingCelsius": 30, "UpperThresholdCritical": 90,
         "LowerThresholdCritical": 5} for i in range(500)
    ]  # fmt: skip
    for i in range(12):
        parts[f"/Chassis/{i}"] = {"Id": f"C{i}", "Thermal": {"@odata.id": f"{R}/Chassis/{i}/T"}}
        parts[f"/Chassis/{i}/T"] = {"Temperatures": members}
    polled, _ = poll_beside(service([], **parts))
    assert polled.hostile.data is not None
    assert len(polled.hostile.data.readings) == MAX_READINGS
    assert polled.hostile.data.partial_errors[-1].endswith(f"only the first {MAX_READINGS} kept")
    healthy_unaffected(polled)


# -- 3. device strings that cannot be encoded or shown ------------------------------------


def test_lone_surrogates_controls_and_bidi_in_device_strings() -> None:
    chassis = with_chassis(Thermal="Chassis/1/Thermal")
    chassis["Model"] = "R\ud800 640"
    chassis["Manufacturer"] = "Evil\u202e Corp\x1b[2J"
    thermal = {
        "Fans": [{"Name": "Fan \ud800", "Reading": 4000, "ReadingUnits": "RPM"}],
        "Temperatures": [
            {"Name": "Inlet\nhw_up 1", "ReadingCelsius": 22},
            {"Name": "x" * 100_000, "ReadingCelsius": 23},
        ],
    }
    managers = {"Members": [{"@odata.id": f"{R}/Managers/1"}]}
    hostile = service(
        [],
        **{
            "": {
                "Chassis": {"@odata.id": f"{R}/Chassis"},
                "Managers": {"@odata.id": f"{R}/Managers"},
            },
            "/Managers": managers,
            "/Managers/1": {"FirmwareVersion": "1.0\udfff\u2066"},
            "/Chassis/1": chassis,
            "/Chassis/1/Thermal": thermal,
        },
    )
    polled, _ = poll_beside(hostile)
    got = readings(polled.hostile)
    assert got[("fan_speed", "Fan \ufffd", "")] == 4000
    assert got[("temperature", "Inlet\ufffdhw_up 1", "")] == 22
    assert got[("temperature", "x" * 255 + "\u2026", "")] == 23
    assert polled.hostile.data is not None
    info = polled.hostile.data.info
    assert (info.model, info.vendor, info.firmware) == (
        "R\ufffd 640",
        "Evil Corp\ufffd[2J",
        "1.0\ufffd",
    )
    text = polled.exposition()  # encoded by the exporter: raised UnicodeEncodeError before
    promtool_check_metrics(text)
    assert 'model="R\ufffd 640"' in text
    store = Store()
    store.register(polled.hostile.target, polled.hostile.protocol, polled.hostile.labels)
    store.record(polled.hostile)
    assert "Inlet\ufffdhw_up 1" in room_json(store).decode()  # ensure_ascii=False: encoded
    assert "\u202e" not in page(store).decode()
    healthy_unaffected(polled)


# -- 4. sessions refused after login -------------------------------------------------------


class SessionService:
    """A service that hands out sessions, then answers `refusal` to every other request;
    it counts logins, DELETEs and the sessions still open."""

    def __init__(self, refusal: int) -> None:
        self.refusal = refusal
        self.logins = 0
        self.deletes = 0
        self.chassis_reads = 0
        self.open: set[str] = set()
        root = {
            "Chassis": {"@odata.id": f"{R}/Chassis"},
            "Links": {"Sessions": {"@odata.id": f"{R}/SessionService/Sessions"}},
        }
        self.resources = {f"{R}": root}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/")
        if request.method == "POST" and path == f"{R}/SessionService/Sessions":
            self.logins += 1
            sid = f"s{self.logins}"
            self.open.add(sid)
            location = f"{R}/SessionService/Sessions/{sid}"
            return web.json_response(
                {"@odata.id": location}, status=201, headers={"X-Auth-Token": f"tok-{sid}"}
            )
        if request.method == "DELETE":
            self.deletes += 1
            self.open.discard(path.rpartition("/")[2])
            return web.Response(status=204)
        if path in self.resources:
            return web.json_response(self.resources[path])
        return web.json_response({}, status=self.refusal)


@pytest.mark.parametrize("refusal", [401, 403])
def test_a_session_refused_after_login_is_deleted_and_not_renewed_in_the_poll(
    refusal: int,
) -> None:
    bmc = SessionService(refusal)
    polled, _ = poll_beside(bmc.handle, polls=3)  # one driver, three polls, then close()
    assert (polled.hostile.success, polled.hostile.reason) == (False, "auth")
    # One login per poll (a 401 right after a login is no reason for another), and every
    # session made is DELETEd when it is given up.
    assert bmc.logins == 3
    assert bmc.deletes == 3
    assert bmc.open == set()
    healthy_unaffected(polled)


def test_an_expired_session_is_deleted_renewed_once_and_deleted_at_close() -> None:
    bmc = SessionService(404)
    # The baseline service's resources behind the session service's root.
    bmc.resources.update({k: v for k, v in service([]).items() if k != R})
    expired: set[str] = set()

    async def expiring(request: web.Request) -> web.StreamResponse:
        presented = request.headers.get("X-Auth-Token", "")
        path = request.path.rstrip("/")
        if request.method == "GET" and path.startswith(f"{R}/Chassis"):
            if presented in expired or not presented.startswith("tok-"):
                return web.json_response({}, status=401)
            if path == f"{R}/Chassis" and presented == "tok-s1" and bmc.chassis_reads == 2:
                expired.add(presented)  # the session timed out between polls 2 and 3
                return web.json_response({}, status=401)
            if path == f"{R}/Chassis":
                bmc.chassis_reads += 1
        return await bmc.handle(request)

    polled, _ = poll_beside(expiring, polls=3)
    assert polled.hostile.success, polled.hostile.message
    assert bmc.logins == 2  # renewed once, in the poll that found it expired
    assert bmc.deletes == 2  # the expired one when renewed, the new one at close()
    assert bmc.open == set()
    healthy_unaffected(polled)


# -- 5. numbers that are valid JSON but no float -------------------------------------------


def test_out_of_range_numbers_cost_their_sensor_only() -> None:
    big = "1" + "0" * 400  # 401 digits: float() raises OverflowError
    huge = "9" * 5000  # past Python's int_max_str_digits: json.loads raises ValueError
    body = (
        '{"Temperatures": ['
        f'{{"Name": "Big", "ReadingCelsius": {big}}},'
        f'{{"Name": "Huge", "ReadingCelsius": {huge}}},'
        '{"Name": "NaN", "ReadingCelsius": NaN},'
        '{"Name": "Inf", "ReadingCelsius": Infinity, "UpperThresholdCritical": -Infinity},'
        '{"Name": "Exp", "ReadingCelsius": 1e999},'
        f'{{"Name": "Fine", "ReadingCelsius": 24, "UpperThresholdCritical": {big}}}]}}'
    ).encode()
    html = raw(body, content_type="text/html")
    hostile = service([], **{"/Chassis/1": with_chassis(Thermal="Chassis/1/Thermal"),
                             "/Chassis/1/Thermal": html})  # fmt: skip
    polled, _ = poll_beside(hostile)
    got = readings(polled.hostile)
    temperatures = {k[1]: v for k, v in got.items() if k[0] == "temperature"}
    assert temperatures == {"T": 21.5, "Fine": 24}
    assert polled.hostile.data is not None and polled.hostile.data.partial_errors == ()
    healthy_unaffected(polled)


# -- 7. paged collections ------------------------------------------------------------------


def sensor(name: str, value: float) -> dict[str, object]:
    """A temperature Sensor resource."""
    path = f"{R}/Chassis/1/Sensors/{name}"
    return {"@odata.id": path, "Id": name, "ReadingUnits": "Cel", "Reading": value}


def test_paged_collection_is_followed_to_its_last_page() -> None:
    names = [f"S{i}" for i in range(9)]

    async def paged(request: web.Request) -> web.StreamResponse:
        # Three pages of three members; the next link carries $skip, as services write it.
        skip = int(request.query.get("$skip", "0"))
        body: dict[str, object] = {
            "Members": [{"@odata.id": f"{R}/Chassis/1/Sensors/{n}"} for n in names[skip:][:3]],
            "Members@odata.count": len(names),
        }
        if skip + 3 < len(names):
            body["Members@odata.nextLink"] = f"{R}/Chassis/1/Sensors?$skip={skip + 3}"
        return web.json_response(body)

    parts: dict[str, object] = {
        f"/Chassis/1/Sensors/{n}": sensor(n, 20 + i) for i, n in enumerate(names)
    }
    polled, _ = poll_beside(service([], **parts, **{"/Chassis/1/Sensors": paged}))
    got = readings(polled.hostile)
    assert sorted(k[1] for k in got if k[0] == "temperature") == names
    assert polled.hostile.data is not None and polled.hostile.data.partial_errors == ()
    healthy_unaffected(polled)


def test_a_paging_loop_and_endless_pages_are_partial_errors() -> None:
    requests = {"count": 0}

    async def endless(request: web.Request) -> web.StreamResponse:
        requests["count"] += 1
        page_no = int(request.query.get("page", "0"))
        # Page 0 links to itself in the loop case; otherwise always to one more page.
        following = page_no if request.query.get("loop") else page_no + 1
        return web.json_response(
            {
                "Members": [{"@odata.id": f"{R}/Chassis/1/Sensors/T"}],
                "Members@odata.nextLink": f"{R}/Chassis/1/Sensors?page={following}"
                + ("&loop=1" if request.query.get("loop") else ""),
            }
        )

    async def looping(request: web.Request) -> web.StreamResponse:
        if "page" not in request.query:
            return web.json_response(
                {
                    "Members": [{"@odata.id": f"{R}/Chassis/1/Sensors/T"}],
                    "Members@odata.nextLink": f"{R}/Chassis/1/Sensors?page=0&loop=1",
                }
            )
        return await endless(request)

    for handler, says in ((looping, "loops back to"), (endless, f"more than {MAX_PAGES} pages")):
        requests["count"] = 0
        polled, _ = poll_beside(service([], **{"/Chassis/1/Sensors": handler}))
        # The sensors were the only part: the poll fails with the partial error's words.
        assert (polled.hostile.success, polled.hostile.reason) == (False, "protocol")
        assert says in polled.hostile.message, polled.hostile.message
        assert requests["count"] <= MAX_PAGES
        healthy_unaffected(polled)


# -- 8. memory -----------------------------------------------------------------------------

# Three hostile services polled at once, each answering 3.8 MB arrays on two chassis and a
# 2 MiB answer of 60,000 values just under the per-answer cap, beside a healthy one.
MEMORY_SCENARIO = """
import asyncio, resource, sys
sys.path.insert(0, {root!r})
from tests.test_redfish_hostile_input import memory_scenario
before, peak = asyncio.run(memory_scenario())
print(before, peak)
"""


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/self/status")


async def memory_scenario(hostile_count: int = 3, polls: int = 2) -> tuple[int, int]:
    """(RSS high-water before, after) in KiB of polling hostile services beside a healthy
    one; run in a subprocess of its own so that nothing else counts."""
    big = thermal_body(100_000)
    almost = ('{"Voltages": [' + ",".join(["1"] * 60_000) + "]}").encode()
    chassis = {"Members": [{"@odata.id": f"{R}/Chassis/{i}"} for i in range(2)]}
    parts: dict[str, object] = {"/Chassis": chassis}
    for i in range(2):
        parts[f"/Chassis/{i}"] = {
            "Id": f"C{i}",
            "Thermal": {"@odata.id": f"{R}/Chassis/{i}/Thermal"},
            "Power": {"@odata.id": f"{R}/Chassis/{i}/Power"},
        }
        parts[f"/Chassis/{i}/Thermal"] = raw(big)
        parts[f"/Chassis/{i}/Power"] = raw(almost)
    handlers = [handler_for(service([], **parts)) for _ in range(hostile_count)]
    handlers.append(handler_for(service([])))
    socks = [bind_tcp("127.0.0.1") for _ in handlers]
    runners = [await serve(h, s) for h, s in zip(handlers, socks, strict=True)]
    configs = [redfish_config(f"http://127.0.0.1:{s.getsockname()[1]}") for s in socks]
    await poll_once(configs[-1])  # imports and caches warmed: the baseline
    before = _rss_kib()
    try:
        for _ in range(polls):
            results = await asyncio.gather(*(poll_once(c) for c in configs))
            assert results[-1].success, results[-1].message
            for result in results:
                assert result.reason != "internal", result.message
    finally:
        for runner in runners:
            await runner.shutdown()
            await runner.cleanup()
    return before, _rss_kib()


@pytest.mark.slow(15)
def test_memory_a_hostile_service_can_make_the_process_hold_is_bounded() -> None:
    root = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_SCENARIO.format(root=root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, peak = (int(v) for v in proc.stdout.split())
    grown_mib = (peak - before) / 1024
    print(f"RSS high-water: {before / 1024:.0f} MiB before, {peak / 1024:.0f} MiB after")
    # Each answer is rejected from its text (MAX_VALUES) or decoded within the per-poll
    # budget, and at most LARGE_BODIES large bodies are read at once in the process.
    assert grown_mib < 60, f"RSS high-water grew by {grown_mib:.0f} MiB"
    assert redfish_client.LARGE_BODIES == 2
