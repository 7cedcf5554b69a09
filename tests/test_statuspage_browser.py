"""The status page in a real browser (headless Chromium): the roof-leak room drawn live, the
page's refresh behind TLS and basic auth, leak names shown in full under the rack their
sensors are in, a failed cooling unit labelled so, and device strings shown as text, never
markup.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: fd 3 in,
fd 4 out, NUL-separated JSON), so no WebSocket client is needed, and once with
`--dump-dom` as a person would. A screenshot of the leaking room is kept in tests/artifacts/.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from poller.exporter import exposition
from poller.http import HttpServer, WebConfig
from poller.model import DeviceData, DeviceInfo, HwType, Location, PollResult, Quantity, Reading
from poller.simulator.room import RoomThread
from poller.simulator.scenarios import START
from poller.simulator.snmpsim import free_udp_port
from poller.store import Store
from tests.test_run_e2e import fetch, free_tcp_port
from tests.test_simulator_scenarios import DEVICES, STARTUP, Samples, select, start_poller, stop
from tests.test_statuspage import (
    HOSTILE,
    HOSTILE_SENSOR,
    SITE,
    SPOT_B,
    add,
    hostile_store,
    leak,
    room_store,
    status,
    temp,
)
from tests.util import require

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ARTIFACTS = Path(__file__).parent / "artifacts"
# Without the background-networking flags Chromium dials out at start, and this machine's
# closed network refuses it; as root it needs --no-sandbox.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
)
CANARY = "canary-community-9b1f"


def _high_fd(fd: int) -> int:
    """A copy of fd numbered 100 or more, so bash's 3</4> redirections cannot clobber it
    (bash, because dash takes single-digit descriptors only)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 100)
    os.close(fd)
    return high


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol on a pipe."""

    def __init__(self, log: Path) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="hwpoller-chromium-")
        to_chrome_r, self._to_chrome = (_high_fd(fd) for fd in os.pipe())
        self._from_chrome, from_chrome_w = (_high_fd(fd) for fd in os.pipe())
        argv = [
            require("chromium"),
            *FLAGS,
            "--ignore-certificate-errors",  # the TLS test's self-signed certificate
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile.name}",
            "about:blank",
        ]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["bash", "-c", f'exec "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}', "bash", *argv],
                pass_fds=(to_chrome_r, from_chrome_w),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._next_id = 0
        self.session = ""

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_chrome, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._messages.put(json.loads(message))

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """Send one DevTools command (to the page once one is open) and wait for its answer."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"Chromium did not answer {method} within {timeout} s")
            try:
                answer = self._messages.get(timeout=left)
            except queue.Empty:
                continue
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise AssertionError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer["result"]
                return result

    def open(self, url: str, headers: dict[str, str] | None = None) -> None:
        """Open a page (sending `headers` with every request it makes) and load url."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable")
        if headers:
            self.call("Network.enable")
            self.call("Network.setExtraHTTPHeaders", headers=headers)
        self.call("Page.navigate", url=url)

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in answer:
            raise AssertionError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait(self, what: str, expression: str, timeout: float = 30.0) -> Any:
        """Evaluate until the expression is truthy; fail with what it last was."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}: {expression} is {value!r}")

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the page as it is now."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(
            base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        )
        return path

    def close(self) -> None:
        """Close Chromium and its pipes."""
        try:
            self.call("Browser.close", timeout=10)
            self.proc.wait(10)
        except (AssertionError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._to_chrome)
            self._reader.join(5)
            os.close(self._from_chrome)
            self._profile.cleanup()


@contextmanager
def browser(tmp_path: Path) -> Iterator[Browser]:
    """A Browser, closed afterwards."""
    b = Browser(tmp_path / "chromium.log")
    try:
        yield b
    finally:
        b.close()


RACK_STATES = (
    "Object.fromEntries([...document.querySelectorAll('[data-rack]')]"
    ".map(r => [r.dataset.rack, r.dataset.state]))"
)
RACK_STATES_JSON = f"JSON.stringify({RACK_STATES})"
INLETS = (
    "Object.fromEntries([...document.querySelectorAll('[data-rack]')]"
    ".map(r => [r.dataset.rack, r.querySelector('.inlet').textContent]))"
)
INLET_TEXT = re.compile(r"^\d+\.\d °C$")
# Every leak line as drawn: its rack (null on the room's floor), device, sensor, the text
# of its name, and whether each line of the name lies inside its rack (or the plan) and
# clear of the next leak line: the whole name is on the page, not cut off.
LEAK_LINES = """[...document.querySelectorAll('.leak')].map((g, i, all) => {
  const rack = g.closest('[data-rack]');
  const box = (rack ? rack.querySelector('.rack-box') : g.closest('svg')).getBBox();
  const name = g.querySelector('.leak-name');
  const lines = [...name.querySelectorAll('tspan')].map(t => t.getBBox());
  const next = all[i + 1] && all[i + 1].closest('[data-rack]') === rack
    ? all[i + 1].getBBox().y + 1 : Infinity;
  return {
    rack: rack ? rack.dataset.rack : null,
    device: g.dataset.device,
    sensor: g.dataset.sensor,
    text: name.textContent,
    lines: lines.length,
    inside: lines.every(b => b.width > 0 && b.x >= box.x - 0.5
      && b.x + b.width <= box.x + box.width + 0.5 && b.y + b.height <= next),
  };
})"""
ROOM_DEVICES = {*DEVICES, *(f"{n.removesuffix('-bmc')}-redfish" for n in DEVICES if "-bmc" in n)}


def all_fifteen_up(samples: Samples) -> bool:
    """Every simulated device, BMCs over IPMI and Redfish, polled successfully."""
    up = {dict(lbl)["device"] for lbl, v in select(samples, "hwpoller_up").items() if v == 1}
    return up >= ROOM_DEVICES


def check_leak_lines(lines: list[dict[str, Any]]) -> None:
    """Each leak line names its device and sensor in full, inside its rack."""
    assert lines
    for line in lines:
        wet = "WET" if "WET" in line["text"].split(" · ")[0] else "dry"
        assert line["text"] == f"{wet} · {line['device']}: {line['sensor']}", line
        assert "\u2026" not in line["text"], line
        assert line["inside"], line


@pytest.mark.slow(43)
def test_roof_leak_turns_rack_a_to_leak_live(tmp_path: Path) -> None:
    """The simulated room in roof-leak (its servers' BMCs over IPMI and Redfish, as `make
    run` has it), polled by `hwpoller run`, with one UPS unplugged in rack C: rack A (the wet
    rope) turns leak without a reload, B stays ok, C is unknown, and temperatures, the UPS
    and the CRAC are shown. The NetBotz's spot sensor is drawn under rack B, where the
    simulator's sensor_labels put it, and every leak line names its device."""
    speed = 3.0  # the water comes START/speed = 40 s after the room starts
    with RoomThread(scenario="roof-leak", speed=speed, redfish=True) as room:
        config = tmp_path / "sim.yml"
        room.write_config(config)
        doc = yaml.safe_load(config.read_text())
        doc["auths"]["unplugged"] = {"protocol": "snmp", "version": "2c", "community": CANARY}
        doc["targets"].append(
            {
                "name": "old-ups",
                "address": f"127.0.0.1:{free_udp_port()}",
                "protocol": "snmp",
                "auth": "unplugged",
                "labels": {"site": "city-hall", "room": "server-room", "rack": "C"},
            }
        )
        config.write_text(yaml.safe_dump(doc))
        proc, poller = start_poller(config, tmp_path)
        base = poller.url.removesuffix("/metrics")
        try:
            poller.wait("the simulated devices up", all_fifteen_up, STARTUP)
            with browser(tmp_path) as page:
                page.open(base + "/")
                page.wait("the plan", "document.querySelectorAll('[data-rack]').length === 3")
                page.js("window.loadedOnce = 'yes'")  # gone if the page reloads
                # On a busy machine a 1 s poll sometimes times out, and a rack with a device
                # down is (rightly) a warning: wait for the room to settle.
                dry = {"A": "ok", "B": "ok", "C": "unknown"}
                if room.now < START - 10:  # still dry when the page first drew
                    page.wait(
                        "the dry room",
                        f"{RACK_STATES_JSON} === '{json.dumps(dry, separators=(',', ':'))}'",
                    )
                before = page.js(RACK_STATES)
                assert before["B"] == "ok", before
                assert before["C"] == "unknown", before
                inlets = page.js(INLETS)
                assert INLET_TEXT.match(inlets["A"]) and INLET_TEXT.match(inlets["B"]), inlets
                assert inlets["C"] == "\u2013 °C"
                assert page.js("document.querySelector('.ups td').textContent") == (
                    "mains (utility)"
                )
                # The leak: within one poll (1 s; the trap makes it sooner) plus one refresh.
                deadline = time.monotonic() + (START / speed) + 30
                while not room.model.log and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert room.model.log, "the scenario never let the water in"
                wet_at = time.monotonic()
                page.wait(
                    "rack A to turn leak",
                    "document.querySelector('[data-rack=\"A\"]').dataset.state === 'leak'",
                    timeout=15,
                )
                reaction = time.monotonic() - wet_at
                wet = {"A": "leak", "B": "ok", "C": "unknown"}
                page.wait(
                    "B to stay ok",
                    f"{RACK_STATES_JSON} === '{json.dumps(wet, separators=(',', ':'))}'",
                )
                assert page.js("window.loadedOnce") == "yes"  # refreshed in place
                assert int(page.js("document.getElementById('app').dataset.refreshes")) >= 1
                # Wet under rack A: the rope and the three Dell BMCs' chassis detectors (each
                # seen at its own next poll), each line saying whose it is; the spot sensor
                # under B stays dry.
                page.wait(
                    "four wet lines under rack A",
                    "document.querySelectorAll('[data-rack=\"A\"] .leak.wet').length === 4",
                    timeout=15,
                )
                lines = page.js(LEAK_LINES)
                check_leak_lines(lines)
                wet_a = sorted(
                    (ln["device"], ln["sensor"])
                    for ln in lines
                    if ln["rack"] == "A" and ln["text"].startswith("WET")
                )
                # Redfish parts are named by their human Name (Id only without one).
                floor = "Chassis floor leak detector"
                assert wet_a == [
                    ("db-1-redfish", floor),
                    ("envmon-1", "Leak Rope (Rack A Under Floor)"),
                    ("web-1-redfish", floor),
                    ("web-2-redfish", floor),
                ], lines
                spot = [(ln["rack"], ln["text"]) for ln in lines if ln["sensor"] == SPOT_B]
                assert spot == [("B", f"dry · envmon-1: {SPOT_B}")], lines
                text = page.js("document.body.innerText")
                for needle in ("UPS ups-1", "Cooling crac-1", "%RH", "min", "LEAK", "old-ups"):
                    assert needle in text, needle
                assert "water detected" in page.js(
                    "document.querySelector('.problems li').textContent"
                )
                shot = page.screenshot(ARTIFACTS / "statuspage-roof-leak.png")
                print(f"screenshot: {shot} (rack A leak {reaction:.1f} s after the water)")
            api = fetch(base + "/api/room")[1]
            assert CANARY not in api and CANARY not in fetch(base + "/")[1]
        except BaseException as exc:
            stop(proc)
            log = (tmp_path / "poller.log").read_text()
            raise AssertionError(f"{exc}\npoller log:\n{log}") from exc
        assert stop(proc) == 0


def test_leak_names_own_racks_and_a_failed_crac_are_visible(tmp_path: Path) -> None:
    """A monitor in rack A whose wet spot sensor lies under rack B (sensor_labels), a leak
    rope with a very long name, three BMCs' "ChassisFloor" detectors and a CRAC whose alarms
    say cooling failed: B is drawn leaking with the spot line under it, A is not; every leak
    name is whole, wrapped inside its rack; the CRAC reads FAILED (its label in capitals)."""
    store = Store()
    rope = "Leak Rope (Rack A Under Floor, front to back, along the raised-floor cable tray)"
    rules = ((re.compile(r"\(Rack B\b"), (("rack", "B"),)),)
    store.register("envmon-with-a-long-name-1", "snmp", {**SITE, "rack": "A"}, rules)
    readings = (leak(rope, wet=False), leak(SPOT_B, wet=True), temp("Front", 21.0))
    data = DeviceData(DeviceInfo("APC", "NetBotz"), readings)
    store.record(PollResult("envmon-with-a-long-name-1", "snmp", True, 0.1, time.time(), data))
    for name in ("web-1-redfish", "web-2-redfish", "db-1-redfish"):
        add(store, name, {**SITE, "rack": "A"}, (leak("ChassisFloor", wet=False),), "redfish")
    add(store, "app-1-bmc", {**SITE, "rack": "B"}, (temp("Inlet Temp", 22.0),), "ipmi")
    crac = (
        status("alarms", HwType.COOLING, "failed"),
        status("system", HwType.COOLING, "ok"),
        temp("supply air", 26.0, Location.SUPPLY),
        leak("water under floor", wet=False),
    )
    add(store, "crac-1", dict(SITE), crac)
    server = HttpServer(f"127.0.0.1:{free_tcp_port()}", store, exposition, WebConfig())
    server.start()
    try:
        with browser(tmp_path) as page:
            page.open(f"http://127.0.0.1:{server.port}/")
            page.wait("the plan", "document.querySelectorAll('[data-rack]').length === 2")
            assert page.js(RACK_STATES) == {"A": "ok", "B": "leak"}
            lines = page.js(LEAK_LINES)
            check_leak_lines(lines)
            where = {(ln["device"], ln["sensor"]): ln["rack"] for ln in lines}
            assert where == {
                ("envmon-with-a-long-name-1", rope): "A",
                ("envmon-with-a-long-name-1", SPOT_B): "B",
                ("web-1-redfish", "ChassisFloor"): "A",
                ("web-2-redfish", "ChassisFloor"): "A",
                ("db-1-redfish", "ChassisFloor"): "A",
                ("crac-1", "water under floor"): None,  # along the room's floor
            }
            long_line = next(ln for ln in lines if ln["sensor"] == rope)
            assert long_line["lines"] >= 3  # wrapped, not cut
            unit = "document.querySelector('.unit[data-device=\"crac-1\"]')"
            assert page.js(f"{unit}.dataset.state") == "critical"
            label = f"{unit}.querySelector('.rack-state')"  # SVG text: no innerText
            assert page.js(f"{label}.textContent") == "failed"
            assert page.js(f"getComputedStyle({label}).textTransform") == "uppercase"
            shot = page.screenshot(ARTIFACTS / "statuspage-leak-names.png")
            print(f"screenshot: {shot}")
    finally:
        server.stop()


def _tls_auth(tmp_path: Path) -> WebConfig:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [require("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    hashed = bcrypt.hashpw(b"room-pw", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"basic_auth_users:\n  operator: '{hashed}'\n"
    )
    return WebConfig.load(str(web))


def test_page_refreshes_behind_tls_and_basic_auth(tmp_path: Path) -> None:
    """Over HTTPS with basic auth the page draws and then follows the store: rack C, whose
    only device was down (unknown), turns ok once the device answers."""
    store = room_store()
    server = HttpServer(f"127.0.0.1:{free_tcp_port()}", store, exposition, _tls_auth(tmp_path))
    server.start()
    auth = "Basic " + base64.b64encode(b"operator:room-pw").decode()
    try:
        with browser(tmp_path) as page:
            page.open(f"https://127.0.0.1:{server.port}/", {"Authorization": auth})
            page.wait("the plan", "document.querySelectorAll('[data-rack]').length === 6")
            assert page.js(RACK_STATES)["C"] == "unknown"
            inlet = Reading(Quantity.TEMPERATURE, "Inlet Temp", 23.5, Location.INLET)
            data = DeviceData(DeviceInfo(), (inlet,))
            store.record(PollResult("c-1-bmc", "ipmi", True, 0.1, time.time(), data))
            page.wait(
                "rack C to turn ok",
                "document.querySelector('[data-rack=\"C\"]').dataset.state === 'ok'",
                timeout=20,
            )
            assert page.js(INLETS)["C"] == "23.5 °C"
            assert "Cannot reach" not in page.js("document.getElementById('freshness').textContent")
        with browser(tmp_path) as page:  # without credentials: nothing but the refusal
            page.open(f"https://127.0.0.1:{server.port}/")
            time.sleep(2)
            assert page.js("document.querySelectorAll('[data-rack]').length") == 0
    finally:
        server.stop()


def test_device_strings_are_text_in_the_dumped_dom(tmp_path: Path) -> None:
    """`chromium --dump-dom` after the script ran: a device named like markup shows as text;
    no element it names exists."""
    server = HttpServer(f"127.0.0.1:{free_tcp_port()}", hostile_store(), exposition, WebConfig())
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="hwpoller-chromium-") as profile:
            dom = subprocess.run(
                [require("chromium"), *FLAGS, f"--user-data-dir={profile}",
                 "--virtual-time-budget=5000", "--dump-dom", f"http://127.0.0.1:{server.port}/"],
                capture_output=True, timeout=90, check=True, text=True,
            ).stdout  # fmt: skip
    finally:
        server.stop()
    parsed = _Dom()
    parsed.feed(dom)
    assert ("A", "leak") in parsed.racks
    assert "img" not in parsed.tags
    assert parsed.tags.count("script") == 1  # the page's own
    assert "data-initial" not in parsed.attributes  # read once by the script, then dropped
    text = "".join(parsed.text)
    assert HOSTILE in text  # the name, shown as text
    assert HOSTILE_SENSOR in text


class _Dom(HTMLParser):
    """Tags, text and racks of a serialised DOM."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []
        self.racks: list[tuple[str | None, str | None]] = []
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        self.attributes |= set(values)
        if "data-rack" in values:
            self.racks.append((values["data-rack"], values.get("data-state")))

    def handle_data(self, data: str) -> None:
        self.text.append(data)
