"""A real Prometheus scrapes a running hwpoller and evaluates the shipped rules on it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from poller.simulator.snmpsim import SnmpSim
from tests.promserver import Prometheus
from tests.test_run_e2e import free_tcp_port, write_config

pytestmark = pytest.mark.integration


def test_prometheus_scrapes_hwpoller(snmpsim: SnmpSim, tmp_path: Path) -> None:
    config = tmp_path / "hwpoller.yml"
    write_config(config, snmpsim.port)
    port = free_tcp_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "poller",
            "run",
            "--config.file",
            str(config),
            "--web.listen-address",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HW_CANARY": "some-community"},
    )
    try:
        with Prometheus(f"127.0.0.1:{port}") as prom:
            deadline = time.monotonic() + 90  # a busy machine
            while time.monotonic() < deadline:
                up = prom.query('up{job="hwpoller"}')
                temps = prom.query('hw_temperature_celsius{device="ups-1"}')
                alerts = {a["labels"]["alertname"] for a in prom.alerts()}
                # The wrong-community target is down once its first poll has timed out.
                down = prom.query('hwpoller_up{device="ups-wrong"}')
                if up and temps and "HwpollerWatchdog" in alerts and down:
                    break
                time.sleep(1)
            assert up and up[0]["value"][1] == "1", prom.log()
            assert {t["metric"]["sensor"] for t in temps} >= {"Rack A Inlet", "battery"}
            assert "HwpollerWatchdog" in alerts
            assert down and down[0]["value"][1] == "0"
    finally:
        proc.terminate()
        proc.wait(10)
