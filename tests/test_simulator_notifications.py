"""The simulated devices' traps: with polling every 60s, a real `hwpoller run` still shows the
leak, the UPS on battery and the CRAC alarm within seconds, because the simulator sends a
trap to the notification receiver written into its config and hwpoller re-polls the sender."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from poller.simulator.room import RoomThread
from tests.test_run_e2e import free_tcp_port
from tests.test_simulator_scenarios import LEAK_ROPE, STARTUP, Poller, Samples, all_up, stop, value

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# Scenario speed: the incident comes 40 wall seconds after the start, time for hwpoller to
# start and poll every device once on a busy machine.
SPEED = 3.0
# From the event to the change in /metrics: the trap, one SNMP poll, one scrape.
FAST = 5.0


def _leak(s: Samples) -> bool:
    return value(s, "hw_leak_detected", device="envmon-1", sensor=LEAK_ROPE) == 1


def _battery(s: Samples) -> bool:
    return value(s, "hw_ups_power_source", device="ups-1", source="battery") == 1


def _alarm(s: Samples) -> bool:
    return value(s, "hw_status", device="crac-1", sensor="alarms", state="failed") == 1


@pytest.mark.slow(40)
@pytest.mark.parametrize(
    ("scenario", "device", "changed"),
    [("roof-leak", "envmon-1", _leak), ("mains-loss", "ups-1", _battery),
     ("crac-failure", "crac-1", _alarm)],
)  # fmt: skip
def test_trap_shows_the_incident_within_seconds(
    tmp_path: Path, scenario: str, device: str, changed: object
) -> None:
    check = changed  # the predicate on /metrics
    assert callable(check)
    with RoomThread(scenario=scenario, speed=SPEED) as room:
        config = tmp_path / "sim.yml"
        port = free_tcp_port()
        room.write_config(config, interval="60s", listen=f"127.0.0.1:{port}")
        doc = yaml.safe_load(config.read_text())
        assert doc["settings"]["notification_address"].startswith("127.0.0.1:")
        log = tmp_path / "poller.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "poller", "run", "--config.file", str(config)],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        poller = Poller(f"http://127.0.0.1:{port}/metrics")
        try:
            quiet = poller.wait("all nine devices up", all_up, STARTUP)
            assert not room.model.log, "the incident came before hwpoller was up; slow machine"
            assert not check(quiet)
            deadline = time.monotonic() + 120
            while not room.model.log and time.monotonic() < deadline:
                time.sleep(0.05)
            event = time.monotonic()
            seen = poller.wait(f"{scenario} in /metrics", check, FAST)  # type: ignore[arg-type]
            took = time.monotonic() - event
            # The trap was received from the device and caused the poll; no other device
            # was polled for it.
            polled = value(seen, "hwpoller_notifications_total", device=device, result="polled")
            assert polled is not None and polled >= 1, (took, log.read_text())
            others = [
                d
                for d in ("ups-1", "crac-1", "envmon-1", "web-1-bmc")
                if d != device
                and value(seen, "hwpoller_notifications_total", device=d, result="polled")
            ]
            assert not others or scenario == "mains-loss", others  # the CRAC stops too
            assert room.notifier.sent >= 1
            assert took < FAST
        except BaseException as exc:
            stop(proc)
            raise AssertionError(f"{exc}\npoller log:\n{log.read_text()}") from exc
        assert stop(proc) == 0, log.read_text()
