"""IPMI in a process that holds more than 1024 file descriptors (issue 13).

pyghmi's I/O thread waits with select.select(), which rejects descriptors >= 1024; with
thousands of SNMP sockets open first, every pyghmi socket lands above that and no BMC ever
logged in. poller.ipmi.session swaps in PollSelect. Each check runs in a fresh subprocess
(pyghmi's sockets and I/O thread are per process): it raises RLIMIT_NOFILE, takes the low
1100 descriptors with UDP sockets, as SNMP targets do, and polls ipmi_sim through the real
driver. The control run puts the stock select module back and must fail, which shows the
setup really reaches the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from poller.ipmi import sdr
from poller.ipmi.session import PollSelect
from poller.model import PollResult
from tests.ipmisim import IpmiSim, compact_record, full_record, load_fixture

ROOT = Path(__file__).resolve().parents[1]
FILLER = 1100  # low descriptors taken before any pyghmi socket exists
FD_SETSIZE = 1024


def _worker(params: dict[str, Any]) -> dict[str, Any]:
    """In the subprocess: fill the low fds, poll the BMC once, describe what happened."""
    import resource

    from pyghmi.ipmi.private import session as pyghmi_session

    from poller.app import raise_open_files_limit
    from poller.config import parse_config
    from poller.driver import DriverContext, PollSpec, driver_for
    from poller.profiles import load_profiles
    from poller.scheduler import TargetRunner
    from poller.store import Store

    raise_open_files_limit()
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < FILLER + 256:
        return {"error": f"RLIMIT_NOFILE is {soft}; the test needs {FILLER + 256}"}
    filler = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(FILLER)]
    if params["stock"]:
        # This module imported poller.ipmi.session (which installs PollSelect) at the top.
        pyghmi_session.select = select
    thread_errors: list[str] = []
    threading.excepthook = lambda a: thread_errors.append(f"{a.exc_type.__name__}: {a.exc_value}")
    auth = {"protocol": "ipmi", "username": params["username"], "password": params["password"]}
    target = {
        "name": "bmc-high-fd",
        "address": f"{params['host']}:{params['port']}",
        "protocol": "ipmi",
        "auth": "bmc",
        "timeout": "10s",
    }
    # pyghmi in this process (not the IPMI worker process): its sockets are the high ones.
    doc = {"settings": {"ipmi_process": False}, "auths": {"bmc": auth}, "targets": [target]}
    config = parse_config(yaml.safe_dump(doc), "<t>")

    async def poll_once() -> PollResult:
        spec = PollSpec.from_config(config, config.targets[0])
        context = DriverContext(load_profiles(), config.settings)
        store = Store()
        store.register(spec.name, spec.protocol, {})
        runner = TargetRunner(spec, {}, driver_for(spec, context), store, 0, 0)
        try:
            return await runner.poll_once()
        finally:
            await runner.driver.close()
            context.shutdown()

    try:
        result = asyncio.run(poll_once())
        outcome: dict[str, Any] = {"success": result.success, "reason": result.reason}
        if result.data is not None:
            outcome["readings"] = {
                f"{r.quantity.value}/{r.sensor}": r.value
                for r in result.data.readings
                if r.limit_type is None and r.value is not None
            }
    except Exception as exc:  # a hung close is a result to report too
        outcome = {"success": False, "reason": f"{type(exc).__name__}: {exc}"}
    outcome["pyghmi_fds"] = [s.fileno() for s in pyghmi_session.iosockets]
    outcome["lowest_filler_fd"] = min(s.fileno() for s in filler)
    outcome["thread_errors"] = thread_errors
    return outcome


def _run_worker(sim: IpmiSim, stock: bool) -> dict[str, Any]:
    params = {
        "host": sim.host,
        "port": sim.port,
        "username": sim.username,
        "password": sim.password,
        "stock": stock,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.test_ipmi_scale", json.dumps(params)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, f"worker failed ({proc.returncode}): {proc.stderr}"
    outcome: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in outcome, outcome.get("error", "")
    return outcome


@pytest.fixture(scope="module")
def sim() -> Iterator[IpmiSim]:
    """One ipmi_sim BMC (Dell fixture) on loopback."""
    started = IpmiSim("dell").start()
    try:
        yield started
    finally:
        started.stop()


@pytest.mark.integration
def test_bmc_polled_with_all_pyghmi_sockets_above_1024(sim: IpmiSim) -> None:
    outcome = _run_worker(sim, stock=False)
    assert outcome["pyghmi_fds"], "pyghmi opened no socket"
    assert min(outcome["pyghmi_fds"]) >= FD_SETSIZE, outcome["pyghmi_fds"]
    assert outcome["success"], outcome
    assert outcome["thread_errors"] == []
    # The Dell fixture's values, as test_ipmi checks them against ipmitool.
    assert outcome["readings"]["temperature/Inlet Temp"] == 23
    assert outcome["readings"]["temperature/Exhaust Temp"] == 35
    assert outcome["readings"]["fan_speed/Fan1"] == 5040


@pytest.mark.integration
def test_stock_select_fails_in_the_same_setup(sim: IpmiSim) -> None:
    """Control: without PollSelect the same poll fails, because of the fd numbers."""
    outcome = _run_worker(sim, stock=True)
    assert min(outcome["pyghmi_fds"]) >= FD_SETSIZE
    assert not outcome["success"], outcome
    assert any("filedescriptor out of range" in e for e in outcome["thread_errors"]), outcome


# -- PollSelect against select.select, below FD_SETSIZE where both work -----------------


def test_poll_select_matches_select_for_readable_and_writable() -> None:
    a, b = socket.socketpair()
    idle_a, idle_b = socket.socketpair()
    try:
        args: tuple[list[Any], list[Any], list[Any]] = ([a, idle_a, idle_a.fileno()], [b], [a])
        assert PollSelect.select(*args, 0) == select.select(*args, 0) == ([], [b], [])
        b.send(b"x")
        want = select.select(*args, 0)
        assert want == ([a], [b], [])
        assert PollSelect.select(*args, 0) == want
        assert PollSelect.select([a, a], [], [], 0) == ([a, a], [], [])
    finally:
        for s in (a, b, idle_a, idle_b):
            s.close()


def test_poll_select_timeout_and_errors() -> None:
    a, b = socket.socketpair()
    try:
        assert PollSelect.select([a], [], [], 0.05) == ([], [], [])
        with pytest.raises(ValueError, match="non-negative"):
            PollSelect.select([a], [], [], -1)
        with pytest.raises(ValueError, match="negative"):
            PollSelect.select([-1], [], [], 0)
        b.close()  # a hang-up reads as readable, as with select()
        assert PollSelect.select([a], [], [], 0) == select.select([a], [], [], 0) == ([a], [], [])
        fd = os.dup(a.fileno())
        os.close(fd)
        with pytest.raises(OSError, match="Bad file descriptor") as got:
            PollSelect.select([fd], [], [], 0)
        assert got.value.errno == errno.EBADF
        with pytest.raises(OSError, match="Bad file descriptor") as stock:
            select.select([fd], [], [], 0)
        assert stock.value.errno == errno.EBADF
    finally:
        a.close()


def test_pyghmi_session_module_uses_poll_select() -> None:
    from pyghmi.ipmi.private import session as pyghmi_session

    assert isinstance(pyghmi_session.select, PollSelect)


def test_pyghmi_lock_orders_cannot_deadlock() -> None:
    """pyghmi's two paths, as the stack dump of a hung scale run showed them: send_payload
    holds KEEPALIVE_SESSIONS and takes WAITING_SESSIONS (_xmit_packet); a retry holds
    WAITING_SESSIONS and takes KEEPALIVE_SESSIONS (_timedout -> send_payload). Run both at
    once, each holding its first lock until the other has its own: with two locks this is
    the deadlock (both acquires time out)."""
    from pyghmi.ipmi.private import session as pyghmi_session

    both_hold = threading.Barrier(2, timeout=1)
    got: dict[str, bool] = {}

    def path(name: str, first: str, second: str) -> None:
        with getattr(pyghmi_session, first):
            with contextlib.suppress(threading.BrokenBarrierError):
                both_hold.wait()
            lock = getattr(pyghmi_session, second)
            got[name] = lock.acquire(timeout=2)
            if got[name]:
                lock.release()

    threads = [
        threading.Thread(target=path, args=("send", "KEEPALIVE_SESSIONS", "WAITING_SESSIONS")),
        threading.Thread(target=path, args=("retry", "WAITING_SESSIONS", "KEEPALIVE_SESSIONS")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert got == {"send": True, "retry": True}


# -- memory: parsed SDR sensors shared between BMCs with identical records --------------


def _records(fixture: str) -> list[bytes]:
    sensors = load_fixture(fixture)["sensors"]
    return [
        bytes(compact_record(k, s) if "states" in s else full_record(k, s))
        for k, s in enumerate(sensors, start=1)
    ]


def test_identical_sdr_records_share_parsed_sensors() -> None:
    records = _records("dell")
    a = sdr.parse_records(records, sdr.DeviceId(674, 1, "7.10"))
    b = sdr.parse_records(list(records), sdr.DeviceId(674, 1, "7.10"))
    assert len(a) == len(records) > 5
    assert all(x is y for x, y in zip(a, b, strict=True))
    # Another product, or one changed record, is parsed on its own.
    other = sdr.parse_records(records, sdr.DeviceId(674, 2, "7.10"))
    assert not any(x is y for x, y in zip(a, other, strict=True))
    changed = [records[0][:-1] + b"X", *records[1:]]
    c = sdr.parse_records(changed, sdr.DeviceId(674, 1, "7.10"))
    assert c[0] is not a[0] and c[0].name != a[0].name
    assert all(x is y for x, y in zip(a[1:], c[1:], strict=True))


def test_non_linear_sensors_are_never_shared() -> None:
    """Their formula factors are fetched from each BMC at read time and kept on pyghmi's
    decoder object, so one shared object would mix BMCs."""
    record = bytearray(_records("dell")[0])
    record[23] = 0x70  # linearization: non-linear, factors read from the BMC
    first = sdr.parse_records([bytes(record)], sdr.DeviceId(674, 1, "7.10"))
    second = sdr.parse_records([bytes(record)], sdr.DeviceId(674, 1, "7.10"))
    assert first[0].entry.linearization == 0x70
    assert first[0] is not second[0]


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))), flush=True)
    # A pyghmi thread hung by the control run would keep the interpreter from exiting.
    os._exit(0)
