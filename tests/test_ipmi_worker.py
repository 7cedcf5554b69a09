"""IPMI polls in the worker process (settings.ipmi_process, the default), against ipmi_sim:
same readings as in process, errors as the same classes, a killed or hung worker replaced,
sessions kept across a reload and closed on shutdown, no child process or fd left behind,
and `hwpoller run` exporting a BMC's readings with default settings."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from poller.config import Config, parse_config
from poller.driver import Checked, DriverContext, PollSpec, driver_for
from poller.errors import AuthError, UnsupportedError
from poller.ipmi import IpmiResource
from poller.ipmi.driver import IpmiDriver
from poller.ipmi.proxy import IpmiProxy, IpmiWorkerError, WorkerClient
from poller.model import DeviceData
from poller.profiles import load_profiles
from poller.scheduler import Scheduler
from poller.store import Store
from tests.ipmisim import IpmiSim, free_udp_port, ipmi_config
from tests.util import LABELS

pytestmark = pytest.mark.integration


@pytest.fixture
def sim() -> Iterator[IpmiSim]:
    """A Dell-like ipmi_sim BMC of the test's own."""
    started = IpmiSim("dell").start()
    yield started
    started.stop()


@pytest.fixture
def silent() -> Iterator[tuple[str, int]]:
    """A UDP port that receives and never answers: a BMC that hangs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()
    sock.close()


def children(pid: int | None = None) -> set[int]:
    """Process ids of IPMI workers whose parent is `pid` (default: this process), zombies
    included (a zombie has no command line left, so any child named python counts)."""
    pid = os.getpid() if pid is None else pid
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name, _, rest = (entry / "stat").read_text().rpartition(")")
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ours = b"poller.ipmi.worker" in cmdline or (not cmdline and "python" in name)
            if int(rest.split()[1]) == pid and ours:
                found.add(int(entry.name))
    return found


def active_sessions(sim: IpmiSim) -> int:
    """Sessions open on the simulator, not counting the one ipmitool opens to ask."""
    match = re.search(r"active sessions\s*:\s*(\d+)", sim.ipmitool("session", "info", "active"))
    assert match, "ipmitool did not report the active session count"
    return int(match.group(1)) - 1


def spec_of(config: Config) -> PollSpec:
    return PollSpec.from_config(config, config.targets[0])


def proxy_of(driver: object) -> IpmiProxy:
    inner = driver.inner if isinstance(driver, Checked) else driver
    assert isinstance(inner, IpmiProxy), type(inner)
    return inner


def client_of(context: DriverContext) -> WorkerClient:
    return context.resource("ipmi", IpmiResource).worker


def silent_config(address: tuple[str, int], timeout: str = "20s") -> Config:
    doc = {
        "auths": {"bmc": {"protocol": "ipmi", "username": "u", "password": "silent-pw-1"}},
        "targets": [
            {
                "name": "bmc-silent",
                "address": f"{address[0]}:{address[1]}",
                "protocol": "ipmi",
                "auth": "bmc",
                "interval": "60s",
                "timeout": timeout,
            }
        ],
    }
    return parse_config(yaml.safe_dump(doc), "<test>")


def test_worker_polls_read_what_in_process_reads(sim: IpmiSim) -> None:
    config = ipmi_config(sim)
    spec = spec_of(config)

    async def go() -> tuple[DeviceData, DeviceData, int | None]:
        profiles = load_profiles()
        context = DriverContext(profiles, config.settings)  # defaults: ipmi_process on
        worker_driver = driver_for(spec, context)
        proxy = proxy_of(worker_driver)
        via_worker = await worker_driver.poll()
        pid = client_of(context).pid
        await worker_driver.close()
        local_context = DriverContext(profiles, config.settings)
        local = IpmiDriver(spec, local_context)
        in_process = await local.poll()
        await local.close()
        local_context.shutdown()
        assert proxy.spec == spec
        context.shutdown()
        return via_worker, in_process, pid

    via_worker, in_process, pid = asyncio.run(go())
    assert pid is not None and pid != os.getpid()
    assert via_worker.info == in_process.info
    assert via_worker.readings == in_process.readings
    assert readings_of(via_worker)[("temperature", "Inlet Temp", "")] == 23


def readings_of(data: DeviceData) -> dict[tuple[str, str, str], object]:
    return {
        (r.quantity.value, r.sensor, r.limit_type or r.hw_type or ""): (
            r.state if r.state is not None else r.value
        )
        for r in data.readings
    }


def test_off_switch_keeps_pyghmi_in_process(sim: IpmiSim) -> None:
    config = ipmi_config(sim, name="dell-bmc")
    doc = {
        "settings": {"ipmi_process": False},
        "auths": {"bmc": {"protocol": "ipmi", "username": sim.username, "password": sim.password}},
        "targets": [{**_target(config), "auth": "bmc"}],
    }
    local = parse_config(yaml.safe_dump(doc), "<test>")

    async def go() -> tuple[object, int]:
        context = DriverContext(load_profiles(), local.settings)
        driver = driver_for(spec_of(local), context)
        inner = driver.inner if isinstance(driver, Checked) else driver
        data = await driver.poll()
        await driver.close()
        context.shutdown()
        return inner, len(data.readings)

    inner, count = asyncio.run(go())
    assert isinstance(inner, IpmiDriver)
    assert count > 10


def _target(config: Config) -> dict[str, Any]:
    target = config.targets[0]
    return {
        "name": target.name,
        "address": target.address,
        "protocol": "ipmi",
        "interval": "60s",
        "timeout": "30s",
    }


def test_device_errors_arrive_as_the_same_class(
    sim: IpmiSim, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-password-77"
    config = ipmi_config(sim, auth={"password": wrong})
    anonymous = ipmi_config(sim, auth={"username": "", "password": ""})

    async def go() -> tuple[BaseException, BaseException, str]:
        context = DriverContext(load_profiles(), config.settings)
        driver = driver_for(spec_of(config), context)
        with pytest.raises(AuthError) as auth:
            await driver.poll()
        no_user = driver_for(spec_of(anonymous), context)
        with pytest.raises(UnsupportedError) as unsupported:
            await no_user.poll()
        # The same check in process, for the message.
        local = IpmiDriver(spec_of(anonymous), context)
        with pytest.raises(UnsupportedError) as here:
            await local.poll()
        for d in (driver, no_user):
            await d.close()
        context.shutdown()
        return auth.value, unsupported.value, str(here.value)

    with caplog.at_level(logging.DEBUG):
        auth, unsupported, message = asyncio.run(go())
    assert type(auth) is AuthError and "rejected the credentials" in str(auth)
    assert type(unsupported) is UnsupportedError and str(unsupported) == message
    for text in (str(auth), str(unsupported), caplog.text):
        assert wrong not in text and sim.password not in text


def test_log_level_change_reaches_the_worker(
    sim: IpmiSim, caplog: pytest.LogCaptureFixture
) -> None:
    """settings.log_level changed on reload: the running worker is told before the next poll,
    so its debug records start arriving without a restart."""
    config = ipmi_config(sim)
    root = logging.getLogger()

    async def go() -> int:
        context = DriverContext(load_profiles(), config.settings)
        driver = driver_for(spec_of(config), context)
        root.setLevel(logging.INFO)
        await driver.poll()
        root.setLevel(logging.DEBUG)
        await driver.poll()
        await asyncio.sleep(0.2)  # the worker's record follows its answer on the socket
        starts = client_of(context).starts
        await driver.close()
        context.shutdown()
        return starts

    before = root.level
    caplog.set_level(logging.DEBUG)  # the handler's level; the root logger's is set in go()
    try:
        starts = asyncio.run(go())
    finally:
        root.setLevel(before)
    assert starts == 1
    assert "IPMI worker log level now DEBUG" in caplog.text
    assert "IPMI worker ready" not in caplog.text  # sent at INFO, before the change


def test_killed_worker_fails_in_flight_polls_and_is_restarted(
    sim: IpmiSim, silent: tuple[str, int]
) -> None:
    hung = silent_config(silent)
    good = ipmi_config(sim)

    async def go() -> dict[str, Any]:
        context = DriverContext(load_profiles(), good.settings)
        client = client_of(context)
        stuck = driver_for(spec_of(hung), context)
        healthy = driver_for(spec_of(good), context)
        await healthy.poll()
        first = client.pid
        assert first is not None
        in_flight = asyncio.create_task(stuck.poll())
        await asyncio.sleep(1.0)
        assert not in_flight.done()
        started = time.monotonic()
        os.kill(first, signal.SIGKILL)
        with pytest.raises(IpmiWorkerError) as lost:
            await in_flight
        failed_after = time.monotonic() - started
        # Still within the restart delay: a clear error, no new process yet.
        with pytest.raises(IpmiWorkerError) as waiting:
            await healthy.poll()
        assert client.pid is None
        await asyncio.sleep(1.2)
        data = await healthy.poll()
        second = client.pid
        out = {
            "lost": str(lost.value),
            "waiting": str(waiting.value),
            "failed_after": failed_after,
            "readings": len(data.readings),
            "pids": (first, second),
            "starts": client.starts,
        }
        for d in (stuck, healthy):
            await d.close()
        context.shutdown()
        return out

    got = asyncio.run(go())
    assert got["lost"] == "IPMI worker exited (killed by SIGKILL)"
    assert got["waiting"].startswith("IPMI worker exited (killed by SIGKILL); a new one starts in")
    assert got["failed_after"] < 2
    assert got["readings"] > 10
    first, second = got["pids"]
    assert second is not None and second != first and got["starts"] == 2
    with pytest.raises(ChildProcessError):  # reaped: no zombie
        os.waitpid(first, os.WNOHANG)
    assert not children()


def test_hung_worker_is_killed_and_replaced(
    sim: IpmiSim, silent: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(WorkerClient, "hang_timeout", 2.0)
    good = ipmi_config(sim)
    hung = silent_config(silent)

    async def go() -> tuple[str, float, int, int]:
        context = DriverContext(load_profiles(), good.settings)
        client = client_of(context)
        healthy = driver_for(spec_of(good), context)
        await healthy.poll()
        pid = client.pid
        assert pid is not None
        stuck = driver_for(spec_of(hung), context)
        in_flight = asyncio.create_task(stuck.poll())
        await asyncio.sleep(0.5)
        os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing
        started = time.monotonic()
        with pytest.raises(IpmiWorkerError) as lost:
            await in_flight
        took = time.monotonic() - started
        await asyncio.sleep(1.2)
        data = await healthy.poll()
        for d in (healthy, stuck):
            await d.close()
        context.shutdown()
        return str(lost.value), took, pid, len(data.readings)

    message, took, pid, count = asyncio.run(go())
    assert message.startswith("IPMI worker hung (no answer for ")
    assert message.endswith("s), killed (killed by SIGKILL)")
    assert 1 <= took < 6  # silence counted from the last beat (every second)
    assert count > 10
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_abandoned_polls_are_cancelled_and_late_answers_dropped(
    sim: IpmiSim, silent: tuple[str, int]
) -> None:
    """Polls given up on (as the scheduler's deadline does) are cancelled in the worker;
    the other target's polls on the same worker get their own answers meanwhile, and an
    answer to a request nobody waits for is dropped."""
    hung = silent_config(silent)
    good = ipmi_config(sim)

    async def go() -> tuple[list[int], int]:
        context = DriverContext(load_profiles(), good.settings)
        client = client_of(context)
        stuck = driver_for(spec_of(hung), context)
        healthy = driver_for(spec_of(good), context)
        counts = []
        for _ in range(3):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(stuck.poll(), 0.3)
            data = await healthy.poll()
            counts.append(readings_of(data)[("temperature", "Inlet Temp", "")])
        pending = len(client._pending)
        client._dispatch(("ok", 10**9, data))
        client._dispatch(("error", 10**9, AuthError("late")))
        assert (await healthy.poll()).readings == data.readings
        for d in (stuck, healthy):
            await d.close()
        context.shutdown()
        return counts, pending

    counts, pending = asyncio.run(go())
    assert counts == [23, 23, 23]
    assert pending == 0


def test_close_logs_out_and_shutdown_leaves_no_process_or_fd(sim: IpmiSim) -> None:
    config = ipmi_config(sim)

    async def go() -> tuple[int, int, int, int, int | None]:
        fds = len(os.listdir("/proc/self/fd"))
        context = DriverContext(load_profiles(), config.settings)
        driver = driver_for(spec_of(config), context)
        await driver.poll()
        await driver.poll()
        open_sessions = await asyncio.to_thread(active_sessions, sim)
        pid = client_of(context).pid
        await driver.close()
        await asyncio.sleep(0.3)
        after_close = await asyncio.to_thread(active_sessions, sim)
        context.shutdown()
        return fds, len(os.listdir("/proc/self/fd")), open_sessions, after_close, pid

    fds_before, fds_after, open_sessions, after_close, pid = asyncio.run(go())
    assert (open_sessions, after_close) == (1, 0)
    assert pid is not None
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not children()
    assert fds_after == fds_before


def reload_config(sim: IpmiSim, rack: str = "A", threads: int = 4) -> Config:
    doc = {
        "settings": {"interval": "1s", "timeout": "0.9s", "jitter": 0, "ipmi_threads": threads},
        "auths": {"bmc": {"protocol": "ipmi", "username": sim.username, "password": sim.password}},
        "targets": [
            {
                "name": "dell-bmc",
                "address": f"{sim.host}:{sim.port}",
                "protocol": "ipmi",
                "auth": "bmc",
                "labels": {**LABELS, "rack": rack},
            }
        ],
    }
    return parse_config(yaml.safe_dump(doc), "<test>")


def test_reload_keeps_the_worker_side_session(sim: IpmiSim) -> None:
    async def wait_polled(store: Store, after: float) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            view = store.get("dell-bmc")
            if view is not None and view.last_success_at and view.last_success_at > after:
                return
            await asyncio.sleep(0.1)
        raise AssertionError("no successful poll")

    async def go() -> dict[str, Any]:
        store = Store()
        scheduler = Scheduler(reload_config(sim), load_profiles(), store)
        await scheduler.start()
        await wait_polled(store, 0)
        client = client_of(scheduler.context)
        pid, driver = client.pid, scheduler.runners["dell-bmc"].driver
        kept = await scheduler.apply(reload_config(sim, rack="B"), load_profiles())
        await wait_polled(store, time.time())
        same = (client.pid, scheduler.runners["dell-bmc"].driver, client.starts)
        sessions = await asyncio.to_thread(active_sessions, sim)
        # The pool size is the worker's: a new worker, the old one stopped.
        replaced = await scheduler.apply(reload_config(sim, rack="B", threads=2))
        await wait_polled(store, time.time())
        new_client = client_of(scheduler.context)
        out = {
            "kept": kept,
            "same": same == (pid, driver, 1),
            "sessions": sessions,
            "replaced": replaced,
            "old_pid": pid,
            "new_pid": new_client.pid,
            "new_threads": new_client.threads,
            "labels": dict(store.get("dell-bmc").labels),  # type: ignore[union-attr]
        }
        await scheduler.stop()
        return out

    got = asyncio.run(go())
    assert got["kept"] == 0 and got["same"], got
    assert got["sessions"] == 1  # one login, kept across the reload
    assert got["replaced"] == 1 and got["new_threads"] == 2
    assert got["new_pid"] not in (None, got["old_pid"])
    assert got["labels"]["rack"] == "B"
    with pytest.raises(ChildProcessError):
        os.waitpid(got["old_pid"], os.WNOHANG)
    assert not children()


def _fetch(url: str) -> str:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return str(response.read().decode())
    except OSError:
        return ""


def test_hwpoller_run_exports_a_bmc_through_the_worker(sim: IpmiSim, tmp_path: Path) -> None:
    """Default settings (ipmi_process on): the readings reach /metrics, the worker is a
    child of hwpoller, its log lines reach hwpoller's log, SIGTERM leaves nothing behind."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    wrong_port = free_udp_port()
    doc = {
        "settings": {"notification_address": None, "interval": "5s"},
        "auths": {
            "bmc": {"protocol": "ipmi", "username": sim.username, "password": sim.password},
            "nope": {"protocol": "ipmi", "username": sim.username, "password": "wrong-pw-913"},
        },
        "targets": [
            {
                "name": "dell-bmc",
                "address": f"{sim.host}:{sim.port}",
                "protocol": "ipmi",
                "auth": "bmc",
            },
            {
                "name": "bmc-wrong",
                "address": f"{sim.host}:{sim.port}",
                "protocol": "ipmi",
                "auth": "nope",
            },
            {
                "name": "bmc-nobody",
                "address": f"127.0.0.1:{wrong_port}",
                "protocol": "ipmi",
                "auth": "bmc",
            },
        ],
    }
    config = tmp_path / "hwpoller.yml"
    config.write_text(yaml.safe_dump(doc))
    log_path = tmp_path / "hwpoller.log"
    url = f"http://127.0.0.1:{port}/metrics"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "poller", "--log.level", "debug", "run", "--config.file",
             str(config), "--web.listen-address", f"127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        body = ""
        while time.monotonic() < deadline:
            body = _fetch(url)
            if 'sensor="Inlet Temp"' in body and 'hwpoller_up{device="bmc-wrong"' in body:
                break
            time.sleep(0.5)
        inlet = re.search(
            r'^hw_temperature_celsius\{device="dell-bmc",location="inlet".*\} (\S+)$', body, re.M
        )
        assert inlet and float(inlet.group(1)) == 23, body[-2000:]
        workers = children(proc.pid)
        assert len(workers) == 1
        cmdline = Path(f"/proc/{next(iter(workers))}/cmdline").read_bytes().split(b"\0")
        assert b"poller.ipmi.worker" in cmdline
        # The worker's own log line is in hwpoller's log.
        deadline = time.monotonic() + 20
        while "IPMI worker ready (pid" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0
    assert not children(proc.pid)
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists()
    text = log_path.read_text()
    assert sim.password not in text and "wrong-pw-913" not in text
    assert "Traceback" not in text
