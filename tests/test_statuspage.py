"""The room model (from a Store, no browser), /api/room, and the page's escaping and auth."""

from __future__ import annotations

import base64
import json
import re
import ssl
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import bcrypt
import pytest
import yaml

from poller import room_model, statuspage
from poller.exporter import exposition
from poller.http import HttpServer, WebConfig
from poller.model import (
    DeviceData,
    DeviceInfo,
    HwType,
    LimitType,
    Location,
    PollResult,
    PowerSource,
    Quantity,
    Reading,
)
from poller.room_model import build
from poller.room_values import Overview
from poller.store import Store
from tests.test_http import get
from tests.test_run_e2e import free_tcp_port
from tests.util import require

NOW = 1_800_000_000.0
SITE = {"site": "hq", "room": "r1"}


def temp(sensor: str, value: float, location: Location = Location.INLET) -> Reading:
    return Reading(Quantity.TEMPERATURE, sensor, value, location)


def limit(sensor: str, limit_type: LimitType, value: float) -> Reading:
    return Reading(Quantity.TEMPERATURE, sensor, value, Location.INLET, limit_type)


def status(sensor: str, hw_type: HwType, state: str) -> Reading:
    return Reading(Quantity.STATUS, sensor, state=state, hw_type=hw_type)


def leak(sensor: str, wet: bool) -> Reading:
    return Reading(Quantity.LEAK, sensor, 1.0 if wet else 0.0, Location.FLOOR)


def add(
    store: Store,
    name: str,
    labels: dict[str, str],
    readings: tuple[Reading, ...] | None,
    protocol: str = "snmp",
    at: float = NOW - 5,
) -> None:
    """Register a target; readings=None: its last poll failed; () with no poll: pending."""
    store.register(name, protocol, labels)
    if readings is None:
        store.record(PollResult(name, protocol, False, 1.0, at, reason="timeout", message="no"))
    else:
        data = DeviceData(DeviceInfo(vendor="V", model="M"), readings)
        store.record(PollResult(name, protocol, True, 0.1, at, data))


def room_store() -> Store:
    """Racks A (wet rope), B (hot inlet, default limits), C (all down), D (one of two down),
    E (never polled), F (inlet over the device's own critical limit); a CRAC and a UPS."""
    store = Store()
    own = (
        limit("Inlet Temp", LimitType.HIGH_DEGRADED, 42.0),
        limit("Inlet Temp", LimitType.HIGH_CRITICAL, 47.0),
    )
    add(store, "a-1-bmc", {**SITE, "rack": "A"}, (temp("Inlet Temp", 22.0), *own), "ipmi")
    add(
        store,
        "env-a",
        {**SITE, "rack": "A"},
        (
            leak("Leak Rope", wet=True),
            leak("Spot Leak", wet=False),
            status("Leak Rope", HwType.LEAK, "failed"),
            temp("Front", 21.0),
            Reading(Quantity.HUMIDITY, "Front RH", 0.5, Location.INLET),
        ),
    )
    add(store, "b-1-bmc", {**SITE, "rack": "B"}, (temp("Inlet Temp", 28.5),), "ipmi")
    add(store, "b-2-bmc", {**SITE, "rack": "B"}, (temp("Inlet Temp", 24.0), *own), "ipmi")
    add(store, "c-1-bmc", {**SITE, "rack": "C"}, None, "ipmi", at=NOW - 60)
    add(store, "d-1-bmc", {**SITE, "rack": "D"}, (temp("Inlet Temp", 21.0), *own), "ipmi")
    add(store, "d-2-bmc", {**SITE, "rack": "D"}, None, "ipmi")
    store.register("e-1-bmc", "ipmi", {**SITE, "rack": "E"})
    add(store, "f-1-bmc", {**SITE, "rack": "F"}, (temp("Inlet Temp", 47.5), *own), "ipmi")
    add(
        store,
        "crac-1",
        dict(SITE),
        (
            status("general alarm", HwType.COOLING, "degraded"),
            status("system", HwType.COOLING, "ok"),
            temp("supply air", 16.0, Location.SUPPLY),
            temp("return air", 27.0, Location.RETURN),
            leak("water under floor", wet=False),
        ),
    )
    add(
        store,
        "ups-1",
        {**SITE, "rack": "B"},
        (
            Reading(Quantity.UPS_POWER_SOURCE, "", state=PowerSource.BATTERY.value),
            Reading(Quantity.BATTERY_CHARGE, "battery", 0.8),
            Reading(Quantity.BATTERY_TIME_LEFT, "battery", 1500.0),
            Reading(Quantity.UPS_LOAD, "", 0.38),
        ),
    )
    return store


@pytest.fixture
def overview() -> Overview:
    return build(room_store().snapshot(), NOW)


def test_racks_in_a_row_by_name_with_their_state(overview: Overview) -> None:
    (room,) = overview.rooms
    assert (room.site, room.room) == ("hq", "r1")
    states = {rack.name: rack.state for rack in room.racks}
    assert list(states) == ["A", "B", "C", "D", "E", "F"]
    # B: 28.5 C with no limits of its own is over the 27 C default; its UPS is on battery.
    assert states == {
        "A": "leak",
        "B": "critical",
        "C": "unknown",
        "D": "warning",
        "E": "unknown",
        "F": "critical",
    }
    assert room.state == "leak" == overview.state


def test_rack_inlet_is_the_hottest_judged_by_its_own_limits(overview: Overview) -> None:
    racks = {rack.name: rack for rack in overview.rooms[0].racks}
    a = racks["A"].inlet
    assert a is not None
    assert (a.celsius, a.device, a.state, a.warning, a.critical) == (
        22.0,
        "a-1-bmc",
        "ok",
        42.0,
        47.0,
    )
    b = racks["B"].inlet
    assert b is not None
    assert (b.celsius, b.device, b.state, b.own_limits) == (28.5, "b-1-bmc", "warning", False)
    assert (b.warning, b.critical) == (27.0, 32.0)
    f = racks["F"].inlet
    assert f is not None
    assert (f.celsius, f.state) == (47.5, "critical")
    # 47.5 C would be critical by the defaults too; 30 C under a device's 42 C limit is not.
    store = Store()
    add(
        store,
        "hot",
        {"rack": "X"},
        (temp("Inlet", 30.0), limit("Inlet", LimitType.HIGH_DEGRADED, 42.0)),
    )
    (rack,) = build(store.snapshot(), NOW).rooms[0].racks
    assert rack.inlet is not None
    assert (rack.inlet.state, rack.state) == ("ok", "ok")
    assert racks["C"].inlet is None  # a down rack shows no temperature, not a stale one


def test_leak_sensors_belong_to_their_targets_rack(overview: Overview) -> None:
    (room,) = overview.rooms
    racks = {rack.name: rack for rack in room.racks}
    assert [(lk.sensor, lk.wet) for lk in racks["A"].leaks] == [
        ("Leak Rope", True),
        ("Spot Leak", False),
    ]
    assert racks["B"].leaks == ()
    assert [(lk.device, lk.sensor) for lk in room.floor_leaks] == [("crac-1", "water under floor")]
    assert racks["A"].humidity == 0.5


def test_devices_answer_and_age(overview: Overview) -> None:
    devices = {d.name: d for d in overview.devices}
    assert devices["a-1-bmc"].answer == "up"
    assert devices["a-1-bmc"].kind == "server"
    assert devices["a-1-bmc"].last_success_age == pytest.approx(5.0)
    assert (devices["c-1-bmc"].answer, devices["c-1-bmc"].reason) == ("down", "timeout")
    assert devices["c-1-bmc"].last_success_age is None  # never answered
    assert (devices["e-1-bmc"].answer, devices["e-1-bmc"].state) == ("pending", "unknown")
    assert devices["crac-1"].kind == "cooling"
    assert devices["ups-1"].kind == "ups"
    assert devices["env-a"].kind == "environment"
    assert [d.name for d in overview.rooms[0].unracked] == ["crac-1"]


def test_ups_and_cooling(overview: Overview) -> None:
    (room,) = overview.rooms
    (ups,) = room.ups
    assert (ups.device, ups.source, ups.charge, ups.runtime_seconds, ups.load) == (
        "ups-1",
        "battery",
        0.8,
        1500.0,
        0.38,
    )
    assert ups.state == "critical"
    (crac,) = room.cooling
    assert [(a.sensor, a.state) for a in crac.alarms] == [
        ("general alarm", "degraded"),
        ("system", "ok"),
    ]
    assert (crac.supply_celsius, crac.return_celsius, crac.state) == (16.0, 27.0, "warning")


def test_problems_worst_first_one_per_sensor(overview: Overview) -> None:
    problems = [(p.severity, p.device, p.sensor, p.text) for p in overview.problems]
    assert problems[0] == ("leak", "env-a", "Leak Rope", "water detected")  # not also "failed"
    assert [p[0] for p in problems] == sorted(
        (p[0] for p in problems),
        key=["leak", "critical", "unknown", "warning", "ok"].index,
    )
    assert (
        "critical",
        "f-1-bmc",
        "Inlet Temp",
        "47.5 °C, over its high.critical limit 47.0 °C",
    ) in (problems)
    assert (
        "warning",
        "b-1-bmc",
        "Inlet Temp",
        "28.5 °C, over its high.degraded limit 27.0 °C",
    ) in (problems)
    assert ("critical", "ups-1", "power source", "on battery") in problems
    assert ("warning", "crac-1", "general alarm", "cooling degraded") in problems
    assert ("warning", "c-1-bmc", "", "not answering (timeout)") in problems
    assert ("unknown", "e-1-bmc", "", "not polled yet") in problems
    assert not [p for p in problems if p[1] in ("a-1-bmc", "b-2-bmc", "d-1-bmc")]


def test_healthy_room_is_ok_and_empty_store_is_empty() -> None:
    store = Store()
    add(store, "s1", {**SITE, "rack": "1"}, (temp("Inlet", 21.0),), "ipmi")
    add(store, "s2", {**SITE, "rack": "10"}, (temp("Inlet", 21.0),), "ipmi")
    add(store, "s3", {**SITE, "rack": "2"}, (temp("Inlet", 21.0),), "ipmi")
    view = build(store.snapshot(), NOW)
    assert [r.name for r in view.rooms[0].racks] == ["1", "2", "10"]
    assert view.state == "ok"
    assert view.problems == ()
    empty = build([], NOW)
    assert (empty.rooms, empty.state) == ((), "ok")


def test_targets_without_labels_form_their_own_room() -> None:
    store = Store()
    add(store, "lone", {}, (temp("Inlet", 21.0),))
    (room,) = build(store.snapshot(), NOW).rooms
    assert (room.site, room.room, room.racks) == ("", "", ())
    assert [d.name for d in room.unracked] == ["lone"]


HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_SENSOR = "</script><script>alert(2)</script>&amp;"


def hostile_store() -> Store:
    store = Store()
    add(
        store,
        HOSTILE,
        {"site": "s'\"", "room": "<b>r</b>", "rack": "A"},
        (leak(HOSTILE_SENSOR, wet=True), temp(HOSTILE_SENSOR, 22.0)),
    )
    return store


class _Attrs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.initial: str | None = None
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for key, value in attrs:
            if key == "data-initial":
                self.initial = value


def test_page_escapes_device_strings_and_carries_exact_data() -> None:
    store = hostile_store()
    page = statuspage.page(store).decode()
    assert HOSTILE not in page
    assert "</script><script>" not in page
    assert page.count("<script") == 1 and page.count("</script>") == 1
    parser = _Attrs()
    parser.feed(page)
    assert "img" not in parser.tags
    assert parser.initial is not None
    data = json.loads(parser.initial)  # the browser reads exactly the model's JSON
    rack = data["rooms"][0]["racks"][0]
    assert rack["devices"][0]["name"] == HOSTILE
    assert rack["leaks"][0]["sensor"] == HOSTILE_SENSOR
    assert data["rooms"][0]["room"] == "<b>r</b>"
    assert rack["state"] == "leak"


def test_shipped_script_places_device_strings_as_text_only() -> None:
    """room.js never parses strings as markup: no innerHTML, outerHTML, insertAdjacentHTML,
    document.write or eval anywhere."""
    script = (Path(statuspage.__file__).parent / "static" / "room.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert "</script" not in script.lower()
    assert "http://" not in script.replace("http://www.w3.org/2000/svg", "")  # nothing fetched


@pytest.fixture
def web_auth(tmp_path: Path) -> WebConfig:
    """Basic auth for one user and TLS with a fresh self-signed certificate."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [require("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    hashed = bcrypt.hashpw(b"room-pw", bcrypt.gensalt(rounds=4)).decode()
    cfg = tmp_path / "web.yml"
    cfg.write_text(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"basic_auth_users:\n  operator: '{hashed}'\n"
    )
    return WebConfig.load(str(cfg))


def serve(store: Store, web: WebConfig) -> Iterator[HttpServer]:
    server = HttpServer(f"127.0.0.1:{free_tcp_port()}", store, exposition, web)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_api_room_over_tls_behind_basic_auth(web_auth: WebConfig, tmp_path: Path) -> None:
    context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    good = {"Authorization": "Basic " + base64.b64encode(b"operator:room-pw").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"operator:wrong").decode()}
    for server in serve(room_store(), web_auth):
        base = f"https://127.0.0.1:{server.port}"
        for path in ("/", "/api/room"):
            status, headers, body = get(base + path, context=context)
            assert (status, body) == (401, b""), path
            assert "Basic" in headers["WWW-Authenticate"]
            assert get(base + path, bad, context=context)[0] == 401, path
        status, headers, body = get(base + "/api/room", good, context=context)
        assert status == 200
        assert headers["Content-Type"] == "application/json"
        data = json.loads(body)
        assert [r["state"] for r in data["rooms"][0]["racks"]][:3] == [
            "leak",
            "critical",
            "unknown",
        ]
        status, headers, body = get(base + "/", good, context=context)
        assert status == 200
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert b"data-initial=" in body


# --- a sensor's own place, leak names, cooling labels, protocol roles, alert thresholds ---

SPOT_B = "Spot Leak (Rack B Under Floor)"


def placed_store() -> Store:
    """A monitor in rack A whose spot leak sensor (wet), one inlet probe and one humidity
    sensor sit under rack B, and whose door sensor is in another room; rack B's only
    server is down."""
    store = Store()
    rules = (
        (re.compile(r"\(Rack B\b"), (("rack", "B"),)),
        (re.compile(r"^Door"), (("rack", "Z"), ("room", "r2"))),
    )
    store.register("env-a", "snmp", {**SITE, "rack": "A"}, rules)
    readings = (
        leak("Leak Rope (Rack A Under Floor)", wet=False),
        leak(SPOT_B, wet=True),
        temp("Temperature (Rack A Front)", 22.0),
        temp("Temperature (Rack B Front)", 29.0),
        Reading(Quantity.HUMIDITY, "Humidity (Rack B Front)", 0.55, Location.INLET),
        status("Door (Server Room)", HwType.CONTACT, "failed"),
    )
    data = DeviceData(DeviceInfo(vendor="APC", model="NetBotz"), readings)
    store.record(PollResult("env-a", "snmp", True, 0.1, NOW - 5, data))
    add(store, "b-1-bmc", {**SITE, "rack": "B"}, None, "ipmi")
    return store


def test_a_sensor_is_placed_by_its_own_sensor_labels() -> None:
    """The wet spot sensor under rack B makes B leak, not A; B's inlet and humidity come
    from the probes under it even though B's own server is down; the door sensor is in its
    room r2; each problem names the rack its sensor is in."""
    overview = build(placed_store().snapshot(), NOW)
    rooms = {room.room: room for room in overview.rooms}
    racks = {rack.name: rack for rack in rooms["r1"].racks}
    assert [lk.sensor for lk in racks["A"].leaks] == ["Leak Rope (Rack A Under Floor)"]
    assert [(lk.device, lk.sensor, lk.wet) for lk in racks["B"].leaks] == [("env-a", SPOT_B, True)]
    assert (racks["A"].state, racks["B"].state) == ("ok", "leak")
    assert [d.name for d in racks["A"].devices] == ["env-a"]  # the device stays in A
    assert [d.name for d in racks["B"].devices] == ["b-1-bmc"]
    a, b = racks["A"].inlet, racks["B"].inlet
    assert a is not None and (a.celsius, a.sensor) == (22.0, "Temperature (Rack A Front)")
    assert b is not None and (b.celsius, b.state) == (29.0, "warning")
    assert (racks["A"].humidity, racks["B"].humidity) == (None, 0.55)
    (z,) = rooms["r2"].racks
    assert (z.name, z.state, z.devices) == ("Z", "critical", ())
    where = {p.sensor: (p.room, p.rack, p.severity) for p in overview.problems}
    assert where[SPOT_B] == ("r1", "B", "leak")
    assert where["Temperature (Rack B Front)"] == ("r1", "B", "warning")
    assert where["Door (Server Room)"] == ("r2", "Z", "critical")
    assert where[""] == ("r1", "B", "warning")  # b-1-bmc not answering, in its own rack
    # The device itself reports the water wherever the sensor is.
    assert {d.name: d.state for d in overview.devices}["env-a"] == "leak"


def test_sensor_placement_matches_the_exported_series_labels() -> None:
    """The page puts each sensor where its hw_* series' rack label says (one rule set, the
    exporter's): checked for every leak and inlet series of placed_store()."""
    store = placed_store()
    api = json.loads(statuspage.room_json(store))
    drawn = {
        (lk["sensor"], room["room"], rack["name"])
        for room in api["rooms"]
        for rack in room["racks"]
        for lk in rack["leaks"]
    }
    exported = set()
    for line in exposition(store).decode().splitlines():
        if line.startswith("hw_leak_detected{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            exported.add((labels["sensor"], labels["room"], labels["rack"]))
    assert drawn == exported and len(drawn) == 2


def test_simulated_config_puts_the_spot_leak_under_rack_b() -> None:
    """The simulator's config gives envmon-1 a sensor_labels rule that moves exactly its
    sensors named for rack B (the spot leak) to rack B, checked against the names the
    simulated NetBotz really serves."""
    from pysnmp.proto import rfc1902

    from poller.config import parse_config
    from poller.simulator.model import RoomModel
    from poller.simulator.room import RoomThread, servers
    from poller.simulator.snmp_devices import render_envmon

    with RoomThread(notify=None) as room:
        config = parse_config(yaml.safe_dump(room.config()), "sim.yml")
    targets = {t.name: t for t in config.targets}
    envmon = targets["envmon-1"]
    assert envmon.labels["rack"] == "A"
    values = render_envmon(RoomModel(servers(), []), "envmon-1").values()
    names = {str(v) for v in values if isinstance(v, rfc1902.OctetString) and "(Rack" in str(v)}
    assert SPOT_B in names and "Leak Rope (Rack A Under Floor)" in names
    store = Store()
    store.register("envmon-1", "snmp", envmon.labels, envmon.sensor_label_rules())
    data = DeviceData(DeviceInfo(), tuple(leak(name, wet=False) for name in sorted(names)))
    store.record(PollResult("envmon-1", "snmp", True, 0.1, NOW - 5, data))
    racks = {r.name: r for r in build(store.snapshot(), NOW).rooms[0].racks}
    assert [lk.sensor for lk in racks["B"].leaks] == [SPOT_B]
    assert all("(Rack A" in lk.sensor for lk in racks["A"].leaks)
    # Only the monitor has sensors under another rack.
    assert [t.name for t in config.targets if t.sensor_labels] == ["envmon-1"]


def test_leaks_name_their_device_and_sensor() -> None:
    """Three Redfish BMCs' "ChassisFloor" detectors are three leaks, each with its device
    (the page writes "dry · <device>: <sensor>" from these two fields)."""
    store = Store()
    for name in ("web-1-redfish", "web-2-redfish", "db-1-redfish"):
        add(store, name, {**SITE, "rack": "A"}, (leak("ChassisFloor", wet=False),), "redfish")
    (rack,) = build(store.snapshot(), NOW).rooms[0].racks
    assert sorted((lk.device, lk.sensor) for lk in rack.leaks) == [
        ("db-1-redfish", "ChassisFloor"),
        ("web-1-redfish", "ChassisFloor"),
        ("web-2-redfish", "ChassisFloor"),
    ]
    api = json.loads(statuspage.room_json(store))
    assert {lk["device"] for lk in api["rooms"][0]["racks"][0]["leaks"]} == {
        "web-1-redfish",
        "web-2-redfish",
        "db-1-redfish",
    }
    script = (Path(statuspage.__file__).parent / "static" / "room.js").read_text()
    assert "${leak.device}: ${leak.sensor}" in script  # not the sensor alone


def _crac(*alarms: tuple[str, str], supply: float = 16.0) -> tuple[Reading, ...]:
    return (
        *(status(sensor, HwType.COOLING, state) for sensor, state in alarms),
        temp("supply air", supply, Location.SUPPLY),
        Reading(Quantity.TEMPERATURE, "supply air", 24.0, Location.SUPPLY, LimitType.HIGH_DEGRADED),
    )


def test_a_cooling_units_label_follows_its_alarms() -> None:
    """A CRAC whose alarms say cooling failed is labelled failed (critical), one with a
    degraded alarm "alarm" (warning); a healthy one "cooling"; one that is down "down"."""
    store = Store()
    add(store, "crac-failed", dict(SITE), _crac(("alarms", "failed"), ("system", "ok")))
    add(store, "crac-alarm", dict(SITE), _crac(("general alarm", "degraded")))
    add(store, "crac-ok", dict(SITE), _crac(("system", "ok")))
    add(store, "crac-hot", dict(SITE), _crac(("system", "ok"), supply=30.0))
    add(store, "crac-down", dict(SITE), None)
    api = json.loads(statuspage.room_json(store))
    devices = {d["name"]: (d["kind"], d["state"], d["label"]) for d in api["devices"]}
    assert devices == {
        "crac-failed": ("cooling", "critical", "failed"),
        "crac-alarm": ("cooling", "warning", "alarm"),
        "crac-ok": ("cooling", "ok", "cooling"),
        # Warm supply air, alarms quiet: the state, not a word the alarms did not say.
        "crac-hot": ("cooling", "warning", "warning"),
        "crac-down": ("device", "warning", "down"),
    }
    cooling = {c["device"]: c["state"] for c in api["rooms"][0]["cooling"]}
    assert cooling["crac-failed"] == "critical"


def test_server_kind_comes_from_the_protocol_registry() -> None:
    """IPMI and Redfish targets are servers by their ProtocolSpec.role, answering or not
    (a Redfish BMC with a leak detector is not an "environment"); SNMP is told by readings."""
    from poller import protocols

    assert {p.name: p.role for p in protocols.protocols()} == {
        "snmp": None,
        "ipmi": "server",
        "redfish": "server",
    }
    store = Store()
    bmc = (temp("InletTemp", 22.0), leak("ChassisFloor", wet=False))
    add(store, "web-1-redfish", {**SITE, "rack": "A"}, bmc, "redfish")
    store.register("web-2-redfish", "redfish", {**SITE, "rack": "A"})  # never polled
    add(store, "web-1-bmc", {**SITE, "rack": "A"}, (temp("Inlet Temp", 22.0),), "ipmi")
    add(store, "env-1", {**SITE, "rack": "A"}, (leak("Rope", wet=False),))
    store.register("ups-2", "snmp", {**SITE, "rack": "A"})
    api = json.loads(statuspage.room_json(store))
    kinds = {d["name"]: d["kind"] for d in api["devices"]}
    assert kinds == {
        "web-1-redfish": "server",
        "web-2-redfish": "server",
        "web-1-bmc": "server",
        "env-1": "environment",
        "ups-2": "device",  # SNMP: unknown until it answers
    }
    source = (Path(statuspage.__file__).parent / "room_model.py").read_text()
    assert '"ipmi"' not in source and '"redfish"' not in source


def _rule_numbers(alert: str) -> list[float]:
    """Every number an alert's expressions compare with, in the shipped rules."""
    rules = Path(__file__).parents[1] / "deploy" / "prometheus" / "rules" / "alerts.yml"
    doc = yaml.safe_load(rules.read_text())
    exprs = [r["expr"] for g in doc["groups"] for r in g["rules"] if r.get("alert") == alert]
    assert exprs, alert
    return [float(n) for expr in exprs for n in re.findall(r"[<>]=?\s*(\d+(?:\.\d+)?)", expr)]


def test_default_thresholds_are_the_alert_rules() -> None:
    """The page judges readings without limits by the numbers the alerts use."""
    assert tuple(_rule_numbers("InletTemperatureHigh")) == room_model.DEFAULT_INLET_LIMITS
    assert tuple(_rule_numbers("HumidityOutOfRange")) == room_model.DEFAULT_HUMIDITY_RANGE
    assert _rule_numbers("UpsRuntimeLow") == [room_model.UPS_RUNTIME_CRITICAL]
    assert _rule_numbers("UpsBatteryChargeLow") == [room_model.UPS_CHARGE_WARNING]
    # And the page uses them: 27.5 °C with no limits is a warning, 32.5 °C critical.
    store = Store()
    add(store, "warm", {"rack": "1"}, (temp("Inlet", 27.5),))
    add(store, "hot", {"rack": "2"}, (temp("Inlet", 32.5),))
    states = [r.state for r in build(store.snapshot(), NOW).rooms[0].racks]
    assert states == ["warning", "critical"]
