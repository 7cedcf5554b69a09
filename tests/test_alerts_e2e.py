"""The early-warning pack end to end: the simulated room, hwpoller and a real Prometheus with
the shipped rules. Each incident scenario runs at high speed and the right alert must be
active (firing, or pending where its `for:` is longer than the test); the quiet room fires
nothing but the dead-man's switch; every dashboard query returns data."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from poller.simulator.room import RoomThread
from poller.simulator.snmpsim import free_udp_port
from tests.promserver import Prometheus
from tests.test_simulator_scenarios import STARTUP, all_up, start_poller, stop

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
WATCHDOG = "HwpollerWatchdog"
# Grafana's built-in interval variables, as a 1 s scrape interval makes them.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
LABEL_VALUES = re.compile(r"label_values\((.+),\s*(\w+)\)")


@contextmanager
def monitored_room(
    tmp_path: Path, scenario: str, speed: float, dead_device: bool = False
) -> Iterator[Prometheus]:
    """Room (this process), hwpoller (a process) and Prometheus scraping it every second."""
    with RoomThread(scenario=scenario, speed=speed) as room:
        config = tmp_path / "sim.yml"
        room.write_config(config)
        if dead_device:
            # A UPS that was unplugged: nothing answers on its port.
            doc = yaml.safe_load(config.read_text())
            doc["targets"].append(
                {
                    **doc["targets"][-1],
                    "name": "old-ups",
                    "address": f"127.0.0.1:{free_udp_port()}",
                    "protocol": "snmp",
                    "auth": "simulated-snmp",
                }
            )
            config.write_text(yaml.safe_dump(doc))
        proc, poller = start_poller(config, tmp_path)
        try:
            poller.wait("all simulated devices up", all_up_or_dead(dead_device), STARTUP)
            target = poller.url.removeprefix("http://").removesuffix("/metrics")
            with Prometheus(target) as prom:
                yield prom
        except BaseException as exc:
            stop(proc)
            log = (tmp_path / "poller.log").read_text()
            raise AssertionError(f"{exc}\npoller log:\n{log}") from exc
        assert stop(proc) == 0


def all_up_or_dead(dead_device: bool):  # type: ignore[no-untyped-def]
    def check(samples):  # type: ignore[no-untyped-def]
        if not dead_device:
            return all_up(samples)
        return all_up({k: v for k, v in samples.items() if ("device", "old-ups") not in k[1]})

    return check


def active(prom: Prometheus) -> dict[str, set[str]]:
    """Alert name -> states (pending/firing) of the active alerts."""
    out: dict[str, set[str]] = {}
    for alert in prom.alerts():
        out.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
    return out


def wait_for_alerts(
    prom: Prometheus, wanted: set[str], timeout: float = 120.0
) -> dict[str, set[str]]:
    deadline = time.monotonic() + timeout
    seen: dict[str, set[str]] = {}
    while time.monotonic() < deadline:
        seen = active(prom)
        if wanted <= set(seen):
            return seen
        time.sleep(1)
    raise AssertionError(f"alerts {sorted(wanted - set(seen))} never became active; saw {seen}")


@pytest.mark.slow(15)
@pytest.mark.parametrize(
    ("scenario", "wanted"),
    [
        ("roof-leak", {"WaterLeakDetected"}),
        # InletTemperatureRisingFast needs 3 real minutes of history: its own test below.
        ("crac-failure", {"CoolingUnitAlarm"}),
        ("mains-loss", {"UpsOnBattery"}),
        ("fan-failure", {"FanFailed"}),
    ],
)
def test_incident_raises_its_alert(tmp_path: Path, scenario: str, wanted: set[str]) -> None:
    with monitored_room(tmp_path, scenario, speed=30) as prom:
        seen = wait_for_alerts(prom, wanted)
        assert "firing" in seen[WATCHDOG]
        if scenario == "roof-leak":
            assert "firing" in seen["WaterLeakDetected"]  # no waiting period for water
            (leak,) = [
                a
                for a in prom.alerts()
                if a["labels"]["alertname"] == "WaterLeakDetected"
                and a["labels"]["device"] == "envmon-1"
            ]
            assert leak["labels"]["room"] == "server-room"
            assert leak["labels"]["rack"] == "A"
            assert leak["labels"]["severity"] == "critical"
        if scenario == "fan-failure":
            fan = [a for a in prom.alerts() if a["labels"]["alertname"] == "FanFailed"]
            assert {a["labels"]["device"] for a in fan} == {"web-2-bmc"}


@pytest.mark.slow(40)
def test_one_leak_pages_once(tmp_path: Path) -> None:
    """The wet rope's failed status raises no ComponentFailed beside WaterLeakDetected, and
    the leak alert neither resolves nor fires again while the rope stays wet."""
    with monitored_room(tmp_path, "roof-leak", speed=30) as prom:
        wait_for_alerts(prom, {"WaterLeakDetected"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            alerts = prom.alerts()
            on_envmon = {
                a["labels"]["alertname"]
                for a in alerts
                if a["labels"].get("device") == "envmon-1" and a["labels"]["severity"] != "none"
            }
            # Humidity climbs too, but over 15 scenario minutes; only the water pages.
            assert on_envmon <= {"WaterLeakDetected", "HumidityOutOfRange"}, alerts
            leaks = [a for a in alerts if a["labels"]["alertname"] == "WaterLeakDetected"]
            assert [a["state"] for a in leaks if a["labels"]["device"] == "envmon-1"] == ["firing"]
            time.sleep(1)


@pytest.mark.slow(230)
@pytest.mark.timeout(600)
def test_crac_failure_raises_rising_fast_once(tmp_path: Path) -> None:
    """The room keeps warming after the CRAC fails: each inlet's InletTemperatureRisingFast
    fires and then stays firing (no resolve and re-fire)."""
    # The rule wants 3 real minutes of history and 45 s pending, so the room must keep
    # warming for ~5 real minutes: a slower simulated clock than the other scenarios.
    with monitored_room(tmp_path, "crac-failure", speed=4) as prom:
        wait_for_alerts(prom, {"InletTemperatureRisingFast"}, timeout=330.0)
        first: dict[str, str] = {}
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            rising = [
                a for a in prom.alerts() if a["labels"]["alertname"] == "InletTemperatureRisingFast"
            ]
            for alert in rising:
                key = f"{alert['labels']['device']}/{alert['labels']['sensor']}"
                # activeAt is when the alert became pending; a resolve and re-fire moves it.
                assert first.setdefault(key, alert["activeAt"]) == alert["activeAt"], alert
            assert set(first) <= {
                f"{a['labels']['device']}/{a['labels']['sensor']}" for a in rising
            }, "an InletTemperatureRisingFast alert resolved while the room kept warming"
            time.sleep(1)
        assert len(first) >= 6  # every BMC inlet (and the NetBotz front sensor, if located so)


@pytest.mark.slow(50)
def test_quiet_room_fires_only_the_watchdog(tmp_path: Path) -> None:
    with monitored_room(tmp_path, "quiet", speed=30) as prom:
        wait_for_alerts(prom, {WATCHDOG})
        # Let the rules see a good minute of polls (30 scenario minutes) before judging.
        time.sleep(45)
        assert active(prom) == {WATCHDOG: {"firing"}}


def substitute(expr: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return BUILTINS.get(name) or values[name]

    return VARIABLE.sub(value, expr)


def dashboard_queries(dashboard: dict) -> tuple[list[tuple[str, str]], dict[str, str]]:  # type: ignore[type-arg]
    """(panel title, expr) of every panel target, and variable name -> label_values query."""
    panels = []
    for panel in dashboard["panels"]:
        panels.extend(panel.get("panels", []) if panel["type"] == "row" else [panel])
    exprs = [(p["title"], t["expr"]) for p in panels for t in p["targets"]]
    variables = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable.get("definition") or variable["query"]
            variables[variable["name"]] = query["query"] if isinstance(query, dict) else query
    return exprs, variables


@pytest.mark.slow(16)
def test_every_dashboard_query_returns_data(tmp_path: Path) -> None:
    # A room with something to show on every panel: water on the floor (an alert firing at
    # once, a leak sensor failed) and one device that stopped answering.
    with monitored_room(tmp_path, "roof-leak", speed=30, dead_device=True) as prom:
        seen = wait_for_alerts(prom, {"WaterLeakDetected", "DeviceUnreachable"})
        assert "firing" in seen["WaterLeakDetected"]
        time.sleep(5)  # recording rules have evaluated a few times
        for path in DASHBOARDS:
            dashboard = json.loads(path.read_text())
            exprs, variables = dashboard_queries(dashboard)
            # Resolve the variables in order (site, room, device) the way Grafana does.
            values: dict[str, str] = {}
            options: dict[str, list[str]] = {}
            for name, query in variables.items():
                match = LABEL_VALUES.fullmatch(query)
                assert match, query
                selector, label = match.groups()
                found = prom.query(substitute(selector, values))
                options[name] = sorted({s["metric"][label] for s in found if label in s["metric"]})
                assert options[name], f"{path.name}: variable {name} has no values"
                values[name] = "|".join(options[name])
            for title, expr in exprs:
                if '="$device"' in expr:
                    # The drill-down shows one device: some device must have data for it.
                    hits = [
                        d
                        for d in options["device"]
                        if prom.query(substitute(expr, {**values, "device": d}))
                    ]
                    assert hits, f"{path.name}: panel {title!r} has no data for any device"
                else:
                    assert prom.query(substitute(expr, values)), (
                        f"{path.name}: panel {title!r} returned no data: {expr}"
                    )
