"""`make run` (python -m poller.simulator.demo) brings all nine simulated devices (fifteen
targets) up quickly, quietly, on the event loop `hwpoller run` uses."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_run_e2e import fetch, free_tcp_port

pytestmark = pytest.mark.integration


# The simulated room: six server BMCs (IPMI), a UPS, a CRAC and an environmental monitor.
DEVICES = {
    "web-1-bmc",
    "web-2-bmc",
    "db-1-bmc",
    "app-1-bmc",
    "app-2-bmc",
    "backup-1-bmc",
    "ups-1",
    "crac-1",
    "envmon-1",
    # The same six servers' BMCs over Redfish.
    "web-1-redfish",
    "web-2-redfish",
    "db-1-redfish",
    "app-1-redfish",
    "app-2-redfish",
    "backup-1-redfish",
}


@pytest.mark.slow(15)
def test_demo_serves_every_simulated_device_within_30s(tmp_path: Path) -> None:
    port = free_tcp_port()
    devices = DEVICES
    log = (tmp_path / "demo.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "poller.simulator.demo",
            "--web.listen-address",
            f"127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        up: set[str] = set()
        body = ""
        while time.monotonic() - started < 30 and up != devices:
            body = fetch(f"http://127.0.0.1:{port}/metrics")[1]
            up = set(re.findall(r'^hwpoller_up\{device="([^"]+)".*\} 1\.0$', body, re.M))
            time.sleep(0.5)
        assert up == devices, (tmp_path / "demo.log").read_text()
        # Both protocols really delivered readings, not just health series.
        assert re.search(r'^hw_fan_speed_rpm\{device="web-1-bmc"', body, re.M), body
        assert re.search(r'^hw_leak_detected\{device="envmon-1".*\} 0\.0$', body, re.M), body
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        text = (tmp_path / "demo.log").read_text()
        # A clean start says nothing but INFO: no false warning about any target.
        assert not re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", text), text
        assert f"9 simulated devices ({len(devices)} targets)" in text, text
        assert "(event loop: uvloop)" in text, text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
