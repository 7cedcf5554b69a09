"""`hwpoller run` as a real process: serving, reload, shutdown, and secrets never leaking."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from poller.simulator.snmpsim import SnmpSim, free_udp_port

pytestmark = pytest.mark.integration

CANARY_COMMUNITY = "CANARY-community-5521"
CANARY_V3 = "CANARY-v3-password-8832"
CANARY_IPMI = "CANARY-ipmi-password-1177"


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(url: str) -> tuple[int, str]:
    """GET a loopback URL: (status, body), or (0, "") while nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback test URL
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except urllib.error.URLError:
        return 0, ""


def write_config(path: Path, sim_port: int, extra_targets: int = 0) -> None:
    secret_file = path.parent / "v3-auth"
    secret_file.write_text(CANARY_V3 + "\n")
    targets = [
        {
            "name": "ups-1",
            "address": f"127.0.0.1:{sim_port}",
            "protocol": "snmp",
            "auth": "apc",
            "labels": {"site": "hq", "room": "sr1", "rack": "A"},
        },
        {
            "name": "ups-wrong",
            "address": f"127.0.0.1:{sim_port}",
            "protocol": "snmp",
            "auth": "canary",
        },
        {"name": "v3-wrong", "address": f"127.0.0.1:{sim_port}", "protocol": "snmp", "auth": "v3"},
        {
            "name": "bmc-nobody",
            "address": f"127.0.0.1:{free_udp_port()}",
            "protocol": "ipmi",
            "auth": "bmc",
        },
    ]
    targets += [
        {
            "name": f"ups-extra-{i}",
            "address": f"127.0.0.1:{sim_port}",
            "protocol": "snmp",
            "auth": "rfc",
        }
        for i in range(extra_targets)
    ]
    doc = {
        "settings": {"interval": "2s", "timeout": "1s", "retries": 0},
        "auths": {
            "apc": {"protocol": "snmp", "version": "2c", "community": "apc-smartups"},
            "rfc": {"protocol": "snmp", "version": "2c", "community": "rfc1628-ups"},
            "canary": {"protocol": "snmp", "version": "2c", "community": "${HW_CANARY}"},
            "v3": {
                "protocol": "snmp",
                "version": 3,
                "username": "nobody",
                "security_level": "authPriv",
                "auth_protocol": "SHA256",
                "auth_password_file": str(secret_file),
                "priv_protocol": "AES",
                "priv_password": CANARY_V3,
            },
            "bmc": {"protocol": "ipmi", "username": "admin", "password": CANARY_IPMI},
        },
        "targets": targets,
    }
    path.write_text(yaml.safe_dump(doc))


def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_run_serve_reload_shutdown_and_no_secret_leaks(snmpsim: SnmpSim, tmp_path: Path) -> None:
    config = tmp_path / "hwpoller.yml"
    write_config(config, snmpsim.port)
    port = free_tcp_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HW_CANARY": CANARY_COMMUNITY}
    log_path = tmp_path / "stderr.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "poller",
                "--log.level",
                "debug",
                "run",
                "--config.file",
                str(config),
                "--web.listen-address",
                f"127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        outputs: list[str] = []
        try:
            # Health series exist for every target from start-up, before any poll finished.
            wait_for(lambda: fetch(f"{base}/healthz")[0] == 200)
            status, first = fetch(f"{base}/metrics")
            assert status == 200
            # Every target's health series exist from start-up; hwpoller_up comes with its
            # first poll's outcome (not polled yet is not down).
            for name in ("ups-1", "ups-wrong", "v3-wrong", "bmc-nobody"):
                assert f'hwpoller_last_success_timestamp_seconds{{device="{name}"' in first
            for name in ("ups-1", "ups-wrong", "v3-wrong", "bmc-nobody"):
                wait_for(lambda n=name: f'hwpoller_up{{device="{n}"' in fetch(f"{base}/metrics")[1])
            wait_for(lambda: 'hw_temperature_celsius{device="ups-1"' in fetch(f"{base}/metrics")[1])
            wait_for(
                lambda: (
                    'reason="timeout"' in fetch(f"{base}/")[1] or "timeout" in fetch(f"{base}/")[1]
                )
            )
            metrics = fetch(f"{base}/metrics")[1]
            assert (
                'hwpoller_up{device="ups-1",protocol="snmp",rack="A",room="sr1",site="hq"} 1.0'
                in metrics
            )
            assert 'hwpoller_up{device="ups-wrong",protocol="snmp"} 0.0' in metrics
            assert 'hw_leak_detected{device="ups-wrong"' not in metrics
            outputs += [metrics, fetch(f"{base}/")[1]]
            assert fetch(f"{base}/nope")[0] == 404

            # A broken config on SIGHUP is refused; the running config keeps polling.
            good = config.read_text()
            config.write_text(good + "\nbogus_section: 1\n")
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "reload failed" in log_path.read_text())
            assert 'device="ups-1"' in fetch(f"{base}/metrics")[1]
            # A good config on SIGHUP adds a target without a restart.
            write_config(config, snmpsim.port, extra_targets=1)
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: 'hw_device_info{device="ups-extra-0"' in fetch(f"{base}/metrics")[1])
            outputs.append(fetch(f"{base}/metrics")[1])

            wait_for(lambda: "target bmc-nobody is down" in log_path.read_text())
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
            assert time.monotonic() - started < 5
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs = log_path.read_text()
    outputs.append(logs)
    assert "target ups-wrong is down: timeout" in logs
    assert logs.count("target ups-wrong is down") == 1  # logged once, not every poll
    assert "Traceback" not in logs
    assert "target bmc-nobody is down" in logs
    for text in outputs:
        assert CANARY_COMMUNITY not in text
        assert CANARY_V3 not in text
        assert CANARY_IPMI not in text
