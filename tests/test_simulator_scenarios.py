"""Incident scenarios at high speed, polled by the real hwpoller (`hwpoller run`) over the
network: the normalised metrics must change the way each scenario says."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from poller.simulator.room import RoomThread, SimulatedRoom
from poller.simulator.scenarios import FAN_FAILURE_FAN, FAN_FAILURE_SERVER
from tests.test_run_e2e import fetch, free_tcp_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BMCS = ("web-1-bmc", "web-2-bmc", "db-1-bmc", "app-1-bmc", "app-2-bmc", "backup-1-bmc")
DEVICES = {*BMCS, "ups-1", "crac-1", "envmon-1"}
LEAK_ROPE = "Leak Rope (Rack A Under Floor)"
# Generous: several developers' tests share two cores.
STARTUP = 60.0

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]


class Poller:
    """A `hwpoller run` process and its /metrics, parsed."""

    def __init__(self, url: str) -> None:
        self.url = url

    def scrape(self) -> Samples:
        """Every sample of /metrics as {(name, labels): value}."""
        body = fetch(self.url)[1]
        out: Samples = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return out

    def wait(self, what: str, check: Callable[[Samples], bool], timeout: float = 45.0) -> Samples:
        """Scrape until check(samples) holds; fail with what was last seen."""
        deadline = time.monotonic() + timeout
        samples: Samples = {}
        while time.monotonic() < deadline:
            samples = self.scrape()
            if samples and check(samples):
                return samples
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; last scrape:\n{_dump(samples)}")


def _dump(samples: Samples) -> str:
    return "\n".join(f"{n}{dict(sorted(lbl))} {v}" for (n, lbl), v in sorted(samples.items()))


def select(samples: Samples, name: str, **labels: str) -> dict[Labels, float]:
    """Samples of one metric whose labels include the given ones."""
    want = set(labels.items())
    return {lbl: v for (n, lbl), v in samples.items() if n == name and want <= lbl}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the one sample matching, None when there is none."""
    found = select(samples, name, **labels)
    assert len(found) <= 1, f"{name}{labels} is ambiguous: {found}"
    return next(iter(found.values()), None)


def all_up(samples: Samples) -> bool:
    """Every simulated device was polled successfully."""
    up = {dict(lbl)["device"] for lbl, v in select(samples, "hwpoller_up").items() if v == 1}
    return up == DEVICES


def faults(samples: Samples) -> list[str]:
    """Every hw_status series in a state other than ok, and every wet leak sensor."""
    bad = [
        f"{dict(lbl)['device']}/{dict(lbl)['sensor']}: {dict(lbl)['state']}"
        for lbl, v in select(samples, "hw_status").items()
        if v == 1 and dict(lbl)["state"] != "ok"
    ]
    bad += [
        f"{dict(lbl)['device']}/{dict(lbl)['sensor']}: leak"
        for lbl, v in select(samples, "hw_leak_detected").items()
        if v != 0
    ]
    return bad


def inlets(samples: Samples) -> dict[str, float]:
    """BMC inlet temperatures by device."""
    found = select(samples, "hw_temperature_celsius", location="inlet")
    return {dict(lbl)["device"]: v for lbl, v in found.items() if dict(lbl)["device"] in BMCS}


def start_poller(config: Path, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Poller]:
    """`hwpoller run` on the given config, polling every second and serving a free port."""
    doc = yaml.safe_load(config.read_text())
    port = free_tcp_port()
    doc["settings"].update({"interval": "1s", "timeout": "0.9s", "max_backoff": "2s"})
    doc["settings"]["listen_address"] = f"127.0.0.1:{port}"
    fast = tmp_path / "poller.yml"
    fast.write_text(yaml.safe_dump(doc))
    log = (tmp_path / "poller.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "poller", "run", "--config.file", str(fast)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, Poller(f"http://127.0.0.1:{port}/metrics")


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGINT, then the exit code (killing it when it does not stop)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


@contextmanager
def polled_room(
    tmp_path: Path, scenario: str, speed: float
) -> Iterator[tuple[SimulatedRoom, Poller]]:
    """The room in this process (so the test can see its clock), hwpoller in another."""
    with RoomThread(scenario=scenario, speed=speed) as room:
        config = tmp_path / "sim.yml"
        room.write_config(config)
        proc, poller = start_poller(config, tmp_path)
        try:
            poller.wait("all nine devices up", all_up, STARTUP)
            yield room, poller
        except BaseException as exc:
            stop(proc)
            raise AssertionError(
                f"{exc}\npoller log:\n{(tmp_path / 'poller.log').read_text()}"
            ) from exc
        # With nine devices (SNMP and IPMI) in flight, SIGINT still ends the poller cleanly.
        assert stop(proc) == 0, (tmp_path / "poller.log").read_text()


@pytest.mark.slow(15)
def test_roof_leak_trips_the_rope_under_rack_a_and_humidity_climbs(tmp_path: Path) -> None:
    with polled_room(tmp_path, "roof-leak", speed=30) as (room, poller):
        if not room.model.log:  # polled before the water came: everything dry
            assert not faults(poller.scrape())
        rope = {"device": "envmon-1", "sensor": LEAK_ROPE}
        wet = poller.wait(
            "the leak rope to trip",
            lambda s: value(s, "hw_leak_detected", **rope) == 1,
        )
        labels = dict(next(iter(select(wet, "hw_leak_detected", **rope))))
        assert labels["room"] == "server-room" and labels["rack"] == "A"
        assert labels["location"] == "floor"
        assert value(wet, "hw_status", **rope, hw_type="leak", state="failed") == 1
        # The other leak sensor, under rack B, stays dry.
        assert (
            value(
                wet, "hw_leak_detected", device="envmon-1", sensor="Spot Leak (Rack B Under Floor)"
            )
            == 0
        )
        humidity = value(wet, "hw_humidity_ratio", device="envmon-1")
        assert humidity is not None
        poller.wait(
            "humidity to climb by 5 points",
            lambda s: (value(s, "hw_humidity_ratio", device="envmon-1") or 0) > humidity + 0.05,
        )
        # Later the water reaches the CRAC's own under-floor sensor.
        poller.wait(
            "the CRAC to report water under the floor",
            lambda s: (
                value(s, "hw_leak_detected", device="crac-1", sensor="water under floor") == 1
            ),
        )


@pytest.mark.slow(15)
def test_crac_failure_raises_supply_air_and_inlets_about_1c_per_minute(tmp_path: Path) -> None:
    speed = 30.0
    with polled_room(tmp_path, "crac-failure", speed=speed) as (room, poller):
        before = poller.wait(
            "the compressor to fail", lambda s: bool(room.model.log) and len(inlets(s)) == 6
        )
        t0 = room.now
        supply0 = value(before, "hw_temperature_celsius", device="crac-1", location="supply")
        assert supply0 is not None
        alarm = poller.wait(
            "the CRAC alarm",
            lambda s: value(s, "hw_status", device="crac-1", sensor="alarms", state="failed") == 1,
        )
        assert (
            value(alarm, "hw_status", device="crac-1", sensor="general alarm", state="degraded")
            == 1
        )
        time.sleep(300 / speed)  # five scenario minutes
        after = poller.scrape()
        minutes = (room.now - t0) / 60
        rise = {d: after_v - inlets(before)[d] for d, after_v in inlets(after).items()}
        rates = {d: r / minutes for d, r in rise.items()}
        assert len(rates) == 6, _dump(after)
        mean = sum(rates.values()) / len(rates)
        assert 0.5 < mean < 1.6, f"inlets rose {rates} C/min"
        assert all(r > 0.3 for r in rates.values()), rates
        supply = value(after, "hw_temperature_celsius", device="crac-1", location="supply")
        assert supply is not None and supply >= supply0 + 3, (supply0, supply)


def test_fan_failure_marks_that_fan_failed(tmp_path: Path) -> None:
    device, fan = f"{FAN_FAILURE_SERVER}-bmc", f"Fan{FAN_FAILURE_FAN}"
    with polled_room(tmp_path, "fan-failure", speed=30) as (room, poller):
        if not room.model.log:
            assert value(poller.scrape(), "hw_status", device=device, sensor=fan, state="ok") == 1
        failed = poller.wait(
            f"{device} {fan} to fail",
            lambda s: (
                value(s, "hw_status", device=device, sensor=fan, hw_type="fan", state="failed") == 1
            ),
        )
        rpm = value(failed, "hw_fan_speed_rpm", device=device, sensor=fan)
        limit = value(
            failed, "hw_fan_speed_limit_rpm", device=device, sensor=fan, limit_type="low.critical"
        )
        assert rpm is not None and limit is not None and rpm < limit
        # Only that fan: every other fan of every server is fine.
        others = [f for f in faults(failed) if f != f"{device}/{fan}: failed"]
        assert not others, others


@pytest.mark.slow(19)
def test_mains_loss_runs_on_battery_then_returns_to_utility(tmp_path: Path) -> None:
    ups = {"device": "ups-1"}
    with polled_room(tmp_path, "mains-loss", speed=40) as (room, poller):
        if not room.model.log:
            assert value(poller.scrape(), "hw_ups_power_source", **ups, source="utility") == 1
        on_battery = poller.wait(
            "the UPS to go on battery",
            lambda s: value(s, "hw_ups_power_source", **ups, source="battery") == 1,
        )
        assert value(on_battery, "hw_ups_power_source", **ups, source="utility") == 0
        charge = value(on_battery, "hw_battery_charge_ratio", **ups)
        runtime = value(on_battery, "hw_battery_time_left_seconds", **ups)
        assert charge is not None and runtime is not None
        drained = poller.wait(
            "the battery to drain",
            lambda s: (value(s, "hw_battery_charge_ratio", **ups) or 1) < charge - 0.1,
        )
        assert (value(drained, "hw_battery_time_left_seconds", **ups) or 1e9) < runtime
        assert value(drained, "hw_ups_power_source", **ups, source="battery") == 1
        back = poller.wait(
            "mains to return",
            lambda s: value(s, "hw_ups_power_source", **ups, source="utility") == 1,
        )
        assert value(back, "hw_ups_power_source", **ups, source="battery") == 0
        assert [what for _, what in room.model.log] == ["mains power fails", "mains power returns"]


@pytest.mark.slow(15)
def test_simulate_command_quiet_room_has_no_faults(tmp_path: Path) -> None:
    """`hwpoller simulate` as a process: its config polls clean, and nothing ever fails."""
    config = tmp_path / "sim.yml"
    log = (tmp_path / "simulate.log").open("wb")
    sim = subprocess.Popen(
        [sys.executable, "-m", "poller", "simulate", "--scenario", "quiet", "--speed", "60",
         "--config-out", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP
        while not config.exists() and time.monotonic() < deadline and sim.poll() is None:
            time.sleep(0.2)
        assert config.exists(), (tmp_path / "simulate.log").read_text()
        doc = yaml.safe_load(config.read_text())
        assert {t["name"] for t in doc["targets"]} == DEVICES
        proc, poller = start_poller(config, tmp_path)
        try:
            poller.wait("all nine devices up", all_up, STARTUP)
            for _ in range(10):  # ten scenario minutes of a quiet room
                samples = poller.scrape()
                assert all_up(samples), _dump(samples)
                assert not faults(samples), faults(samples)
                assert value(samples, "hw_ups_power_source", device="ups-1", source="utility") == 1
                assert len(inlets(samples)) == 6
                time.sleep(1)
        finally:
            stop(proc)
    finally:
        assert stop(sim) == 0, (tmp_path / "simulate.log").read_text()
