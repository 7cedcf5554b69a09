"""Hostile and broken Redfish services: every one is a ProtocolError (or a timeout) with a
clear message, never another exception, never a hang past the poll's timeout."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from poller.model import PollResult
from poller.simulator.redfish_bmc import bind_tcp, serve
from tests.test_redfish import redfish_config
from tests.util import poll_once, readings

pytestmark = pytest.mark.integration

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
R = "/redfish/v1"


def service(port_ref: list[int], **overrides: object) -> dict[str, object]:
    """A minimal valid service; `overrides` replace resources by path (a value, or a
    handler for raw answers)."""
    resources: dict[str, object] = {
        f"{R}": {"Chassis": {"@odata.id": f"{R}/Chassis"}},
        f"{R}/Chassis": {"Members": [{"@odata.id": f"{R}/Chassis/1"}]},
        f"{R}/Chassis/1": {
            "@odata.id": f"{R}/Chassis/1",
            "Id": "1",
            "Manufacturer": "Hostile",
            "Sensors": {"@odata.id": f"{R}/Chassis/1/Sensors"},
        },
        f"{R}/Chassis/1/Sensors": {"Members": [{"@odata.id": f"{R}/Chassis/1/Sensors/T"}]},
        f"{R}/Chassis/1/Sensors/T": {
            "@odata.id": f"{R}/Chassis/1/Sensors/T",
            "Id": "T",
            "ReadingUnits": "Cel",
            "PhysicalContext": "Intake",
            "Reading": 21.5,
        },
    }
    resources.update({f"{R}{k}".rstrip("/"): v for k, v in overrides.items()})
    return resources


def poll(resources: dict[str, object], timeout: str = "10s") -> tuple[PollResult, float]:
    """Serve `resources` on a free port, poll once; (result, seconds taken)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        found = resources.get(request.path.rstrip("/"))
        if callable(found):
            answer: web.StreamResponse = await found(request)
            return answer
        if found is None:
            return web.json_response({}, status=404)
        return web.json_response(found)

    async def scenario() -> tuple[PollResult, float]:
        sock = bind_tcp("127.0.0.1")
        runner = await serve(handler, sock)
        try:
            address = f"http://127.0.0.1:{sock.getsockname()[1]}"
            result = await poll_once(redfish_config(address, timeout=timeout))
            return result, result.duration_seconds
        finally:
            await runner.shutdown()
            await runner.cleanup()

    return asyncio.run(scenario())


def failed(result: PollResult, reason: str, text: str) -> None:
    assert (result.success, result.reason) == (False, reason), result.message
    assert text in result.message, result.message


def raw(body: bytes, status: int = 200, **headers: str) -> Handler:
    async def answer(_: web.Request) -> web.StreamResponse:
        return web.Response(body=body, status=status, headers=headers)

    return answer


def test_baseline_service_polls() -> None:
    result, _ = poll(service([]))
    assert readings(result)[("temperature", "T", "")] == 21.5


def test_root_not_json() -> None:
    result, _ = poll(service([], **{"": raw(b"<html>login</html>", content_type="text/html")}))
    failed(result, "protocol", "/redfish/v1/: the answer is not JSON")


def test_root_json_but_not_an_object() -> None:
    result, _ = poll(service([], **{"": raw(b"[1, 2, 3]")}))
    failed(result, "protocol", "not a JSON object")


def test_huge_body_with_length() -> None:
    result, _ = poll(service([], **{"/Chassis": raw(b" " * (5 * 1024 * 1024))}))
    failed(result, "protocol", "larger than 4 MiB")


def test_huge_body_streamed_without_length() -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        rsp = web.StreamResponse()
        rsp.enable_chunked_encoding()
        await rsp.prepare(request)
        for _ in range(80):
            await rsp.write(b"[" * 65536)
        await rsp.write_eof()
        return rsp

    result, _ = poll(service([], **{"/Chassis": stream}))
    failed(result, "protocol", "larger than 4 MiB")


def test_deep_nesting() -> None:
    result, _ = poll(service([], **{"/Chassis": raw(b"[" * 200_000 + b"]" * 200_000)}))
    failed(result, "protocol", "not JSON")


def test_wrong_types() -> None:
    result, _ = poll(service([], **{"/Chassis": {"Members": "all of them"}}))
    failed(result, "protocol", "Members is not an array")
    result, _ = poll(service([], **{"/Chassis": {"Members": [{"@odata.id": 42}]}}))
    failed(result, "protocol", "a link is not a string")
    # A sensor with wrong-typed properties loses its values, not the poll.
    odd = {"Id": ["x"], "ReadingUnits": "Cel", "Reading": "hot", "Status": "fine",
           "Thresholds": {"UpperCritical": 5}}  # fmt: skip
    sensors = {
        "Members": [
            {"@odata.id": f"{R}/Chassis/1/Sensors/T"},
            {"@odata.id": f"{R}/Chassis/1/Sensors/U"},
        ]
    }
    result, _ = poll(service([], **{"/Chassis/1/Sensors": sensors, "/Chassis/1/Sensors/U": odd}))
    got = readings(result)
    assert got[("temperature", "T", "")] == 21.5
    assert not any(k[1] == "U" for k in got)


def test_null_and_absent_are_omitted() -> None:
    sensors = {"Members": [{"@odata.id": f"{R}/Chassis/1/Sensors/{n}"} for n in "TAN"]}
    absent = {"Id": "A", "ReadingUnits": "Cel", "Reading": 30, "Status": {"State": "Absent"}}
    null = {"Id": "N", "ReadingUnits": "Cel", "Reading": None, "Status": {"State": "Enabled"}}
    parts = {"/Chassis/1/Sensors": sensors, "/Chassis/1/Sensors/A": absent}
    result, _ = poll(service([], **parts, **{"/Chassis/1/Sensors/N": null}))
    got = readings(result)
    assert [k[1] for k in got if k[0] == "temperature"] == ["T"]


def test_redirect_loop() -> None:
    async def loop(_: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": f"{R}/Chassis"})

    result, _ = poll(service([], **{"/Chassis": loop}))
    failed(result, "protocol", "HTTP 302 redirect (not followed)")


def test_links_off_the_service() -> None:
    off = {"Members": [{"@odata.id": "https://evil.example/redfish/v1/Chassis/1"}]}
    result, _ = poll(service([], **{"/Chassis": off}))
    failed(result, "protocol", "a link points off the service: https://evil.example")
    up = {"Members": [{"@odata.id": "/etc/passwd"}]}
    result, _ = poll(service([], **{"/Chassis": up}))
    failed(result, "protocol", "a link leaves /redfish/")


def test_too_many_members() -> None:
    many = {"Members": [{"@odata.id": f"{R}/Chassis/{i}"} for i in range(5000)]}
    result, _ = poll(service([], **{"/Chassis": many}))
    failed(result, "protocol", "5000 members (more than 512)")


def test_hung_service_times_out_within_the_poll_timeout() -> None:
    async def hang(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(8)
        return web.json_response({})

    result, took = poll(service([], **{"/Chassis": hang}), timeout="2s")
    assert (result.success, result.reason) == (False, "timeout"), result.message
    assert took < 3.0  # the 2 s deadline, not the 8 s hang


def test_broken_subresource_is_a_partial_error() -> None:
    chassis = json.loads(json.dumps(service([])[f"{R}/Chassis/1"]))
    chassis["ThermalSubsystem"] = {"@odata.id": f"{R}/Chassis/1/ThermalSubsystem"}
    result, _ = poll(service([], **{"/Chassis/1": chassis,
                                    "/Chassis/1/ThermalSubsystem": raw(b"{not json")}))  # fmt: skip
    assert result.success and result.data is not None
    assert result.data.partial_errors == (
        "chassis 1 thermal: /redfish/v1/Chassis/1/ThermalSubsystem: the answer is not JSON",
    )
    assert readings(result)[("temperature", "T", "")] == 21.5
