"""`make run` (python -m poller.simulator.demo) brings every bundled device up quickly."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from poller.simulator.snmpsim import RECORDINGS
from tests.test_run_e2e import fetch, free_tcp_port

pytestmark = pytest.mark.integration


def test_demo_serves_every_simulated_device_within_30s(tmp_path: Path) -> None:
    port = free_tcp_port()
    devices = sorted(p.stem for p in RECORDINGS.glob("*.snmprec"))
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
        while time.monotonic() - started < 30 and up != set(devices):
            body = fetch(f"http://127.0.0.1:{port}/metrics")[1]
            up = set(re.findall(r'^hwpoller_up\{device="([^"]+)".*\} 1\.0$', body, re.M))
            time.sleep(0.5)
        assert up == set(devices), (tmp_path / "demo.log").read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
