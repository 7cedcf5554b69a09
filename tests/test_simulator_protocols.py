"""The simulated devices, read by clients nobody on this project wrote: net-snmp's snmpget/
snmpwalk/snmpbulkwalk, ipmitool (lanplus, cipher suites 3 and 17) and pyghmi."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from poller.simulator.ipmi_bmc import USERS, sensors_for
from poller.simulator.room import COMMUNITY, Device, RoomThread, SimulatedRoom
from tests.util import require

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SYS_OBJECT_IDS = {
    "ups-1": ".1.3.6.1.4.1.318.1.3.27",  # APC smartUPS2
    "crac-1": ".1.3.6.1.4.1.476.1.42",  # Liebert global products
    "envmon-1": ".1.3.6.1.4.1.5528.100.20.10.2013",  # NetBotz 450
}


@pytest.fixture(scope="module")
def room() -> Iterator[SimulatedRoom]:
    """A quiet room at ten times real speed, in a thread of this process."""
    thread = RoomThread(scenario="quiet", speed=10)
    yield thread.start()
    thread.stop()


def device(room: SimulatedRoom, name: str) -> Device:
    """The named simulated device."""
    return next(d for d in room.devices if d.name == name)


def run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a reference client; never raises on failure (the test looks at the result)."""
    require(argv[0])
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def snmp(tool: str, dev: Device, *args: str, community: str = COMMUNITY) -> str:
    proc = run([tool, "-v2c", "-c", community, "-On", "-t", "3", "-r", "1",
                f"{dev.host}:{dev.port}", *args])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def ipmitool(
    dev: Device, *args: str, user: str = "admin", suite: str = "3"
) -> subprocess.CompletedProcess[str]:
    password = USERS[user][0] if user in USERS else "wrong-password"
    return run(["ipmitool", "-I", "lanplus", "-C", suite, "-H", dev.host, "-p", str(dev.port),
                "-U", user, "-P", password, "-N", "2", "-R", "2", *args])  # fmt: skip


@pytest.mark.parametrize("name", sorted(SYS_OBJECT_IDS))
def test_snmp_devices_answer_with_their_real_sys_object_id(room: SimulatedRoom, name: str) -> None:
    out = snmp("snmpget", device(room, name), "1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.5.0")
    assert f"= OID: {SYS_OBJECT_IDS[name]}\n" in out
    assert f'= STRING: "{name}"' in out


@pytest.mark.parametrize("name", sorted(SYS_OBJECT_IDS))
def test_getbulk_walk_equals_getnext_walk(room: SimulatedRoom, name: str) -> None:
    dev = device(room, name)
    # Values change as the room lives; compare which objects exist and their types.
    shape = re.compile(r"^(\S+) = (\w+):", re.M)
    walked = shape.findall(snmp("snmpwalk", dev, "1.3.6.1"))
    bulk = shape.findall(snmp("snmpbulkwalk", dev, "-Cr7", "1.3.6.1"))
    assert len(walked) > 25
    assert walked == bulk


def test_snmpget_reads_the_model_values(room: SimulatedRoom) -> None:
    ups = snmp("snmpget", device(room, "ups-1"),
               "1.3.6.1.4.1.318.1.1.1.2.3.1.0",  # upsHighPrecBatteryCapacity (0.1 %)
               "1.3.6.1.4.1.318.1.1.1.4.1.1.0",  # upsBasicOutputStatus
               "1.3.6.1.2.1.33.1.4.1.0")  # upsOutputSource  # fmt: skip
    assert ".1.3.6.1.4.1.318.1.1.1.2.3.1.0 = Gauge32: 1000" in ups
    assert ".1.3.6.1.4.1.318.1.1.1.4.1.1.0 = INTEGER: 2" in ups  # onLine
    assert ".1.3.6.1.2.1.33.1.4.1.0 = INTEGER: 3" in ups  # normal
    leak = snmp("snmpwalk", device(room, "envmon-1"), "1.3.6.1.4.1.5528.100.4.2.10.1.4")
    assert '"Leak Rope (Rack A Under Floor)"' in leak
    humidity = snmp("snmpget", device(room, "envmon-1"), "1.3.6.1.4.1.5528.100.4.1.2.1.2.1")
    tenths = int(humidity.rsplit(":", 1)[1])
    assert abs(tenths / 1000 - room.model.humidity) < 0.02
    missing = snmp("snmpget", device(room, "crac-1"), "1.3.6.1.4.1.476.1.42.3.4.3.1.7")
    assert "No Such Instance" in missing


def test_wrong_community_gets_no_answer(room: SimulatedRoom) -> None:
    dev = device(room, "ups-1")
    proc = run(["snmpget", "-v2c", "-c", "not-the-community", "-t", "1", "-r", "0",
                f"{dev.host}:{dev.port}", "1.3.6.1.2.1.1.2.0"])  # fmt: skip
    assert proc.returncode != 0 and "Timeout" in proc.stderr + proc.stdout


@pytest.mark.parametrize("suite", ["3", "17"])
def test_ipmitool_sdr_and_sensor_over_lanplus(room: SimulatedRoom, suite: str) -> None:
    dev = device(room, "web-1-bmc")
    server = room.model.servers["web-1"]
    sdr = ipmitool(dev, "sdr", suite=suite)
    assert sdr.returncode == 0, sdr.stderr
    rows = [[c.strip() for c in line.split("|")] for line in sdr.stdout.strip().splitlines()]
    names = [r[0] for r in rows]
    assert names == [s.name for s in sensors_for(server)]
    assert all(r[2] == "ok" for r in rows), sdr.stdout
    inlet = float(rows[0][1].split()[0])
    assert rows[0][1].endswith("degrees C")
    assert abs(inlet - server.inlet) <= 1.5, (inlet, server.inlet)
    sensor = ipmitool(dev, "sensor", suite=suite)
    assert sensor.returncode == 0, sensor.stderr
    table = {c[0]: c for c in ([x.strip() for x in line.split("|")]
                                for line in sensor.stdout.strip().splitlines())}  # fmt: skip
    # name | value | unit | status | lnr | lcr | lnc | unc | ucr | unr
    assert table["Inlet Temp"][4:10] == ["na", "-7.000", "3.000", "42.000", "47.000", "na"]
    assert table["Fan1"][2] == "RPM" and table["Fan1"][5:7] == ["600.000", "840.000"]
    assert table["PS1 Status"][2] == "discrete"


def test_ipmitool_privilege_and_password_are_enforced(room: SimulatedRoom) -> None:
    dev = device(room, "app-1-bmc")
    # "monitor" is a USER account: asking for USER works, ipmitool's default ADMIN does not.
    ok = ipmitool(dev, "-L", "USER", "sdr", user="monitor")
    assert ok.returncode == 0 and "Inlet Temp" in ok.stdout, ok.stderr
    assert ipmitool(dev, "sdr", user="monitor").returncode != 0
    assert ipmitool(dev, "sdr", user="nobody").returncode != 0
    wrong = run(["ipmitool", "-I", "lanplus", "-C", "3", "-H", dev.host, "-p", str(dev.port),
                 "-U", "admin", "-P", "not-the-password", "-N", "1", "-R", "1", "sdr"])  # fmt: skip
    assert wrong.returncode != 0


def test_pyghmi_reads_sensors_and_sees_a_stopped_fan_fail(room: SimulatedRoom) -> None:
    from pyghmi.ipmi.command import Command

    dev = device(room, "app-2-bmc")
    password, _ = USERS["monitor"]
    cmd = Command(dev.host, "monitor", password, port=dev.port, privlevel=2)
    try:
        readings = {r.name: r for r in cmd.get_sensor_data()}
        assert {"Inlet Temp", "Outlet Temp", "CPU1 Temp", "FAN1", "PS1 Status"} <= set(readings)
        assert readings["Inlet Temp"].units == "°C"
        assert readings["FAN2"].health == 0  # ok
        room.model.servers["app-2"].failed_fans.add(1)  # FAN2 stops
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            fan = cmd.get_sensor_reading("FAN2")
            if fan.value is not None and fan.value < 500:
                break
            time.sleep(0.5)
        assert fan.value is not None and fan.value < 500, fan.value
        assert fan.health != 0 and "lower critical threshold" in fan.states
        stopped = ipmitool(device(room, "app-2-bmc"), "sensor")
        row = next(line for line in stopped.stdout.splitlines() if line.startswith("FAN2 "))
        assert row.split("|")[3].strip() in ("cr", "nr"), row
    finally:
        room.model.servers["app-2"].failed_fans.discard(1)
        cmd.ipmi_session.logout()


def test_asf_presence_ping_gets_a_pong(room: SimulatedRoom) -> None:
    dev = device(room, "db-1-bmc")
    ping = bytes([0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x80, 0x2A, 0x00, 0x00])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(ping, (dev.host, dev.port))
        pong, _ = sock.recvfrom(512)
    assert pong[:4] == b"\x06\x00\xff\x06" and pong[8] == 0x40 and pong[9] == 0x2A
    assert pong[20] & 0x80  # supports IPMI
