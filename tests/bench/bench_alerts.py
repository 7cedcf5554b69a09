"""Benchmark: seconds from an incident to the metric change and to the alert, at speed 1.

For each incident scenario a simulated room (`hwpoller simulate --speed 1`, its own process)
is polled by its own `hwpoller run` with the config the simulator writes (10s polling, the
notification receiver on), and one real Prometheus scrapes all of them with the SHIPPED
deploy/prometheus/prometheus.yml (its intervals; only the target list is replaced) and the
shipped rules. The incidents run side by side; one more room is quiet and its hwpoller is
killed (SIGKILL) to time HwpollerDown.

For each incident the table shows, after the incident's start (the simulator's log line of
the event, or the kill): when hwpoller's /metrics showed the change, when the alert was
first firing in Prometheus, how often any alert of that room resolved and fired again
(flaps), and which other alerts fired (a second page for the same incident shows here).

    make bench-alerts            # about 13 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.test_run_e2e import free_tcp_port
from tests.util import require

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
START = 120.0  # scenario seconds of normal operation before the incident
LEAK_ROPE = "Leak Rope (Rack A Under Floor)"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def has(samples: Samples, name: str, value: float = 1.0, **labels: str) -> bool:
    """Whether some sample of `name` with these labels has this value."""
    want = set(labels.items())
    return any(n == name and want <= lbl and v == value for (n, lbl), v in samples.items())


@dataclass
class Incident:
    """One scenario, what shows it in /metrics and the alert that must follow."""

    name: str
    scenario: str
    alerts: tuple[str, ...]  # the alerts the budget is about, first firing of each
    budget: float
    watch: float  # seconds after the incident to keep watching for flaps and extra alerts
    changed: Callable[[Samples], bool] | None = None
    kill: bool = False
    # Filled in while running.
    sim: subprocess.Popen[bytes] | None = None
    poller: subprocess.Popen[bytes] | None = None
    port: int = 0
    started: float | None = None  # Unix time of the incident
    metric_at: float | None = None
    fired_at: dict[str, float] = field(default_factory=dict)
    firing: set[str] = field(default_factory=set)
    flaps: int = 0
    others: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)  # alerts (with labels) that fired so far
    tmp: Path = Path()


INCIDENTS = [
    Incident(
        "roof-leak",
        "roof-leak",
        ("WaterLeakDetected",),
        10,
        240,
        lambda s: has(s, "hw_leak_detected", device="envmon-1", sensor=LEAK_ROPE),
    ),
    Incident(
        "mains-loss",
        "mains-loss",
        ("UpsOnBattery",),
        30,
        120,
        lambda s: has(s, "hw_ups_power_source", device="ups-1", source="battery"),
    ),
    Incident(
        "fan-failure",
        "fan-failure",
        ("FanFailed",),
        60,
        120,
        lambda s: has(s, "hw_status", device="web-2-bmc", sensor="Fan3", state="failed"),
    ),
    Incident(
        "crac-failure",
        "crac-failure",
        ("CoolingUnitAlarm", "InletTemperatureRisingFast"),
        180,
        600,
        lambda s: has(s, "hw_status", device="crac-1", sensor="alarms", state="failed"),
    ),
    Incident("poller killed", "quiet", ("HwpollerDown",), 300, 300, kill=True),
]


def scrape(port: int) -> Samples:
    """hwpoller's /metrics as {(name, labels): value}; empty while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            body = resp.read().decode()
    except OSError:
        return {}
    out: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def start_room(incident: Incident) -> None:
    """The simulator and its hwpoller, in processes of their own."""
    incident.tmp = Path(tempfile.mkdtemp(prefix=f"bench-alerts-{incident.scenario}-"))
    config = incident.tmp / "sim.yml"
    incident.port = free_tcp_port()
    incident.sim = subprocess.Popen(
        [sys.executable, "-m", "poller", "simulate", "--scenario", incident.scenario,
         "--speed", "1", "--config-out", str(config),
         "--web.listen-address", f"127.0.0.1:{incident.port}"],
        stdout=(incident.tmp / "sim.log").open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not config.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if not config.exists():
        raise RuntimeError((incident.tmp / "sim.log").read_text())
    time.sleep(0.5)  # written in one go, but let the writer close it
    incident.poller = subprocess.Popen(
        [sys.executable, "-m", "poller", "run", "--config.file", str(config)],
        stdout=(incident.tmp / "poller.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


def start_prometheus(targets: list[str], tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Prometheus with the shipped prometheus.yml (intervals, job) and rules; only the
    scrape targets are ours and there is no Alertmanager to send to."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    shutil.copytree(PROMETHEUS_DIR / "rules", tmp / "rules")
    config.pop("alerting", None)
    config["scrape_configs"] = [
        {**job, "static_configs": [{"targets": targets}]}
        for job in config["scrape_configs"]
        if job["job_name"] == "hwpoller"
    ]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_tcp_port()
    proc = subprocess.Popen(
        [require("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=(tmp / "prometheus.log").open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


def alerts(url: str) -> list[dict[str, Any]]:
    """Prometheus' active alerts (pending and firing)."""
    try:
        with urllib.request.urlopen(f"{url}/api/v1/alerts", timeout=5) as resp:  # noqa: S310
            return list(json.loads(resp.read())["data"]["alerts"])
    except OSError:
        return []


def incident_started(incident: Incident) -> float | None:
    """Unix time of the scenario's event (scenario time START) from the simulator's log line,
    which is written in the same tick as the model changes; None before it."""
    log = (incident.tmp / "sim.log").read_text(errors="replace")
    match = re.search(rf"^(\S+ \S+) INFO \S+ scenario {incident.scenario} at ", log, re.M)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def track(incidents: list[Incident], prom: str) -> None:
    """One look at every room's /metrics and at Prometheus' alerts."""
    active = alerts(prom)
    for incident in incidents:
        now = time.time()
        if incident.started is None or now - incident.started > incident.watch:
            continue
        changed = incident.changed
        if changed is not None and incident.metric_at is None and changed(scrape(incident.port)):
            incident.metric_at = now - incident.started
        instance = f"127.0.0.1:{incident.port}"
        firing = {
            _key(a)
            for a in active
            if a["state"] == "firing" and a["labels"].get("instance", instance) == instance
            and a["labels"]["alertname"] != "HwpollerWatchdog"
            and (a["labels"]["alertname"] != "HwpollerDown" or incident.kill)
        }  # fmt: skip
        for key in firing - incident.firing:
            alertname = key.split("{", 1)[0]
            if alertname in incident.alerts:
                incident.fired_at.setdefault(alertname, now - incident.started)
            else:
                incident.others.add(alertname)
            if key in incident.seen:
                incident.flaps += 1  # resolved earlier, firing again
            incident.seen.add(key)
        incident.firing = firing


def _key(alert: dict[str, Any]) -> str:
    labels = dict(alert["labels"])
    name = labels.pop("alertname")
    return name + json.dumps(labels, sort_keys=True)


def run(incidents: list[Incident], kill_after: float) -> None:
    """Start everything, follow the incidents until each one's watch time is over."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-alerts-prometheus-"))
    for incident in incidents:
        start_room(incident)
    prom, url = start_prometheus([f"127.0.0.1:{i.port}" for i in incidents], tmp)
    try:
        begun = time.time()
        while True:
            now = time.time()
            for incident in incidents:
                if incident.started is not None:
                    continue
                if incident.kill and now - begun >= kill_after and incident.poller is not None:
                    incident.poller.send_signal(signal.SIGKILL)
                    incident.started = now
                elif not incident.kill:
                    incident.started = incident_started(incident)
            track(incidents, url)
            if all(i.started is not None and now - i.started > i.watch for i in incidents):
                return
            if now - begun > START + 60 + max(i.watch for i in incidents) + kill_after:
                return
            time.sleep(0.25)
    finally:
        for incident in incidents:
            for proc in (incident.poller, incident.sim):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
        prom.terminate()
        prom.wait(20)
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(tmp, ignore_errors=True)
            for incident in incidents:
                shutil.rmtree(incident.tmp, ignore_errors=True)


def report(incidents: list[Incident]) -> str:
    """The result table (markdown)."""

    def sec(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    lines = [
        "| incident | metric changes | alert fires | budget | flaps | other alerts |",
        "|---|---|---|---|---|---|",
    ]
    for i in incidents:
        fired = "; ".join(f"{name} {sec(i.fired_at.get(name))}" for name in i.alerts)
        worst = max((i.fired_at.get(n, float("inf")) for n in i.alerts), default=0.0)
        verdict = "ok" if worst <= i.budget else "MISSED"
        others = ", ".join(sorted(i.others)) or "none"
        lines.append(
            f"| {i.name} | {sec(i.metric_at)} | {fired} | <= {i.budget:g} s ({verdict}) "
            f"| {i.flaps} | {others} |"
        )
    return "\n".join(lines)


def main() -> int:
    """Run the incidents and print the table; exit 1 when a budget is missed or it flaps."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", help="incident names (default: all)")
    parser.add_argument(
        "--kill-after", type=float, default=150.0, help="seconds before the poller is killed"
    )
    args = parser.parse_args()
    chosen = [i for i in INCIDENTS if not args.only or i.name in args.only]
    run(chosen, args.kill_after)
    print(report(chosen))
    bad = [
        i
        for i in chosen
        if i.flaps or any(i.fired_at.get(n, float("inf")) > i.budget for n in i.alerts)
    ]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
