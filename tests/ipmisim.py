"""Start, kill and restart OpenIPMI's ipmi_sim on loopback with the project's BMC fixtures.

A fixture (tests/fixtures/ipmi/*.yaml) lists a BMC's identity and sensors in readable form;
this module turns it into an ipmi_sim command file (mc_add, main_sdr_add with raw SDR
records, sensor_add, thresholds, values) next to a lan.conf rendered from
tests/fixtures/ipmi/lan.conf, and runs ipmi_sim on 127.0.0.1 and a free UDP port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from poller.config import Config, parse_config
from tests.util import LABELS

FIXTURES = Path(__file__).parent / "fixtures" / "ipmi"
USERNAME = "monitor"
PASSWORD = "sim-bmc-pass-1"  # noqa: S105 - a test simulator's password, not a secret

# IPMI sensor type codes and SDR base unit codes (IPMI 2.0 tables 42-3 and 43-15).
SENSOR_TYPES = {"temperature": 0x01, "fan": 0x04, "power_supply": 0x08}
UNITS = {"celsius": 1, "rpm": 18, "percent": 0}
THRESHOLD_BITS = {"lnc": 0, "lc": 1, "lnr": 2, "unc": 3, "uc": 4, "unr": 5}
# Event support masks for ipmi_sim (15 bits, bit 0 rightmost): every threshold crossing.
THRESHOLD_EVENTS = "000111111111111"
DISCRETE_EVENTS = "000000011111111"


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nobody is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _byte(value: int) -> int:
    return value & 0xFF  # two's complement for signed SDR values


def _name_bytes(name: str) -> list[int]:
    raw = name.encode("ascii")[:16]
    return [0xC0 | len(raw), *raw]  # type/length byte: 8-bit ASCII


def full_record(record_id: int, sensor: dict[str, Any]) -> list[int]:
    """An SDR type 01h (full sensor record) for a threshold sensor."""
    limits = sensor.get("thresholds", {})
    mask = sum(1 << THRESHOLD_BITS[k] for k in limits)
    m = int(sensor.get("m", 1))
    unit = sensor.get("unit", "celsius")
    units1 = (0x80 if sensor.get("signed") else 0x00) | (0x01 if unit == "percent" else 0x00)
    body = [
        0x20, 0x00, sensor["number"], sensor["entity"], sensor.get("instance", 1),
        0x7F,  # initialisation: scanning, events, thresholds, hysteresis, type
        0x68,  # capabilities: auto re-arm, hysteresis and thresholds readable and settable
        SENSOR_TYPES[sensor["type"]], 0x01,  # threshold-based reading
        0xFF, 0x7F, 0xFF, 0x7F, mask, mask,
        units1, UNITS[unit], 0x00,
        0x00,  # linear
        m & 0xFF, (m >> 2) & 0xC0, 0x00, 0x00, 0x00, 0x00,  # M, tolerance, B, accuracy, R/B exp
        0x00, 0x00, 0x00, 0x00, 0xFF, 0x00,  # flags, nominal, normal max/min, sensor max/min
        *(_byte(limits.get(k, 0)) for k in ("unr", "uc", "unc", "lnr", "lc", "lnc")),
        0x00, 0x00, 0x00, 0x00, 0x00,  # hysteresis, reserved, OEM
        *_name_bytes(sensor["name"]),
    ]  # fmt: skip
    return [record_id & 0xFF, record_id >> 8, 0x51, 0x01, len(body), *body]


def compact_record(record_id: int, sensor: dict[str, Any]) -> list[int]:
    """An SDR type 02h (compact sensor record) for a discrete, sensor-specific sensor."""
    body = [
        0x20, 0x00, sensor["number"], sensor["entity"], sensor.get("instance", 1),
        0x63, 0x40,  # scanning and events enabled; auto re-arm
        SENSOR_TYPES[sensor["type"]], 0x6F,  # sensor-specific discrete reading
        0xFF, 0x00, 0xFF, 0x00, 0xFF, 0x00,  # event and reading masks: offsets 0-7
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  # units, record sharing, hysteresis
        0x00, 0x00, 0x00, 0x00,  # reserved, OEM
        *_name_bytes(sensor["name"]),
    ]  # fmt: skip
    return [record_id & 0xFF, record_id >> 8, 0x51, 0x02, len(body), *body]


def _hex(values: list[int]) -> str:
    return " ".join(f"0x{v:02x}" for v in values)


def command_file(fixture: dict[str, Any]) -> str:
    """The ipmi_sim command file for a fixture."""
    major, minor = fixture.get("firmware", [1, 0])
    lines = [
        "mc_setbmc 0x20",
        f"mc_add 0x20 0 no-device-sdrs 0x01 0x{major:x} 0x{minor:x} 0x9f "
        f"0x{fixture['manufacturer_id']:06x} 0x{fixture.get('product_id', 1):04x}",
        "sel_enable 0x20 1000 0x0a",
    ]
    for record_id, sensor in enumerate(fixture["sensors"], start=1):
        num = sensor["number"]
        discrete = "states" in sensor
        record = compact_record(record_id, sensor) if discrete else full_record(record_id, sensor)
        lines.append(f"# {sensor['name']}")
        lines.append(f"main_sdr_add 0x20 {_hex(record)}")
        if sensor.get("absent"):  # in the SDR, but no such sensor answers
            continue
        kind = "0x6f" if discrete else "0x01"
        lines.append(f"sensor_add 0x20 0 {num} {SENSOR_TYPES[sensor['type']]} {kind}")
        scanning = "no-scanning" if sensor.get("disabled") else "scanning"
        events = DISCRETE_EVENTS if discrete else THRESHOLD_EVENTS
        if not discrete:
            limits = sensor.get("thresholds", {})
            enabled = "".join(
                "1" if k in limits else "0" for k in ("unr", "uc", "unc", "lnr", "lc", "lnc")
            )
            values = " ".join(
                str(_byte(limits.get(k, 0))) for k in ("unr", "uc", "unc", "lnr", "lc", "lnc")
            )
            lines.append(f"sensor_set_threshold 0x20 0 {num} settable {enabled} {values}")
        lines.append(
            f"sensor_set_event_support 0x20 0 {num} enable {scanning} per-state "
            f"{events} {events} {events} {events}"
        )
        if discrete:
            for bit in sensor["states"]:
                lines.append(f"sensor_set_bit 0x20 0 {num} {bit} 1 0")
        else:
            lines.append(f"sensor_set_value 0x20 0 {num} {_byte(sensor['value'])} 0")
    lines.append("mc_enable 0x20")
    return "\n".join(lines) + "\n"


def load_fixture(name: str) -> dict[str, Any]:
    """tests/fixtures/ipmi/NAME.yaml as a dict."""
    data: dict[str, Any] = yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())
    return data


def _channel_auth_probe() -> bytes:
    """A session-less Get Channel Authentication Capabilities request (RMCP, IPMI 1.5 form)."""
    msg = [0x20, 0x18, 0xC8, 0x81, 0x00, 0x38, 0x8E, 0x02]
    msg.append(-sum(msg[3:]) & 0xFF)
    return bytes([0x06, 0x00, 0xFF, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, len(msg), *msg])


def answers(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when something at host:port answers an IPMI channel-capabilities probe."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(_channel_auth_probe(), (host, port))
            data = sock.recv(512)
        except OSError:
            return False
    return len(data) > 20 and data[0] == 0x06


class IpmiSim:
    """One ipmi_sim process serving one fixture; can be killed and restarted on its port."""

    def __init__(
        self, fixture: str, port: int | None = None, password: str = PASSWORD, max_sessions: int = 4
    ) -> None:
        self.fixture_name = fixture
        self.fixture = load_fixture(fixture)
        self.host = "127.0.0.1"
        self.port = port or free_udp_port(self.host)
        self.username = USERNAME
        self.password = password
        self._tmp = Path(tempfile.mkdtemp(prefix=f"hwpoller-ipmisim-{fixture}-"))
        template = (FIXTURES / "lan.conf").read_text()
        lan = template.format(
            name=f"sim{self.port}",
            host=self.host,
            port=self.port,
            username=self.username,
            password=password,
            max_sessions=max_sessions,
        )
        (self._tmp / "lan.conf").write_text(lan)
        (self._tmp / "bmc.emu").write_text(command_file(self.fixture))
        (self._tmp / "state").mkdir()
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> IpmiSim:
        """Start ipmi_sim and wait until it answers on its port."""
        program = shutil.which("ipmi_sim")
        if program is None:
            raise AssertionError("ipmi_sim is not installed; `make test` installs openipmi")
        self._proc = subprocess.Popen(
            [program, "-c", "lan.conf", "-f", "bmc.emu", "-s", "state", "-n", "-p"],
            cwd=self._tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"ipmi_sim exited with {self._proc.returncode}: {err}")
            if answers(self.host, self.port):
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"ipmi_sim did not answer on {self.host}:{self.port}")

    def kill(self) -> None:
        """SIGKILL, as a crashing or power-cycled BMC: no session is closed."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None

    def restart(self) -> None:
        """Kill and start again on the same port."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Stop the simulator and remove its files."""
        self.kill()
        shutil.rmtree(self._tmp, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        """The simulator's process id while it runs."""
        return self._proc.pid if self._proc else None

    def ipmitool(self, *args: str, password: str | None = None) -> str:
        """Run `ipmitool -I lanplus -C 3` against the simulator and return its stdout."""
        program = shutil.which("ipmitool")
        if program is None:
            raise AssertionError("ipmitool is not installed; `make test` installs it")
        cmd = [program, "-I", "lanplus", "-C", "3", "-H", self.host, "-p", str(self.port)]
        cmd += ["-U", self.username, "-P", password or self.password, "-L", "USER", *args]
        proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"ipmitool {' '.join(args)}: {proc.stderr.decode().strip()}")
        return proc.stdout.decode()

    def __enter__(self) -> IpmiSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ipmitool_sensors(output: str) -> dict[str, list[dict[str, str]]]:
    """Parse `ipmitool sensor` into {name: [row, ...]} (names can repeat, as on Dell)."""
    keys = ("value", "unit", "status", "lnr", "lc", "lnc", "unc", "uc", "unr")
    rows: dict[str, list[dict[str, str]]] = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 10:
            rows.setdefault(cells[0], []).append(dict(zip(keys, cells[1:], strict=True)))
    return rows


def ipmi_config(sim: IpmiSim, name: str | None = None, **extra: Any) -> Config:
    """A one-target hwpoller config for a simulated BMC (user privilege, generous timeout)."""
    auth = {"protocol": "ipmi", "username": sim.username, "password": sim.password}
    auth.update(extra.pop("auth", {}))
    target = {
        "name": name or f"{sim.fixture_name}-bmc",
        "address": f"{sim.host}:{sim.port}",
        "protocol": "ipmi",
        "auth": "bmc",
        "labels": dict(LABELS),
        "interval": "60s",
        "timeout": "30s",
        **extra,
    }
    return parse_config(yaml.safe_dump({"auths": {"bmc": auth}, "targets": [target]}), "<test>")
