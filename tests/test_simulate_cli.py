"""`hwpoller simulate` flags as the compose stack uses them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration


def test_advertised_host_and_listen_address_in_written_config(tmp_path: Path) -> None:
    out = tmp_path / "hwpoller.yml"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "poller",
            "simulate",
            "--listen-host",
            "127.0.0.1",
            "--advertise-host",
            "simulator",
            "--web.listen-address",
            "0.0.0.0:9730",
            "--config-out",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.2)
        config = yaml.safe_load(out.read_text())
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    assert config["settings"]["listen_address"] == "0.0.0.0:9730"
    assert len(config["targets"]) == 9
    assert all(t["address"].startswith("simulator:") for t in config["targets"])
