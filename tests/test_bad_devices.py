"""Broken and hostile devices are marked down with the right reason; healthy ones carry on."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
import yaml

from poller.config import parse_config
from poller.driver import Driver, DriverContext, PollSpec, driver_for
from poller.model import DeviceData
from poller.profiles import load_profiles
from poller.scheduler import Scheduler
from poller.simulator.snmpsim import SnmpSim
from poller.store import Store
from tests.peers import UdpResponder

pytestmark = pytest.mark.integration


class Recording:
    """Wraps a real driver and records when each successful poll finished."""

    def __init__(self, inner: Driver, log: list[float]) -> None:
        self._inner = inner
        self._log = log

    async def poll(self) -> DeviceData:
        data = await self._inner.poll()
        self._log.append(time.monotonic())
        return data

    async def close(self) -> None:
        await self._inner.close()


def test_bad_devices_do_not_disturb_a_healthy_one(snmpsim: SnmpSim) -> None:
    healthy_polls: list[float] = []

    def make(spec: PollSpec, context: DriverContext) -> Driver:
        driver = driver_for(spec, context)
        return Recording(driver, healthy_polls) if spec.name == "healthy" else driver

    # 0x30 0x03 ... is a BER SEQUENCE header followed by nonsense: undecodable SNMP.
    with UdpResponder(None) as silent, UdpResponder(b"\x30\x03\x02\x01\xff garbage") as garbage:
        sim = snmpsim.port
        doc = {
            "settings": {"interval": "1s", "timeout": "0.8s", "retries": 0, "jitter": 0},
            "auths": {
                "good": {"protocol": "snmp", "version": "2c", "community": "apc-smartups"},
                "wrong": {"protocol": "snmp", "version": "2c", "community": "not-the-community"},
            },
            "targets": [
                {
                    "name": "healthy",
                    "address": f"127.0.0.1:{sim}",
                    "protocol": "snmp",
                    "auth": "good",
                },
                {
                    "name": "silent",
                    "address": f"127.0.0.1:{silent.port}",
                    "protocol": "snmp",
                    "auth": "good",
                },
                {
                    "name": "wrong-community",
                    "address": f"127.0.0.1:{sim}",
                    "protocol": "snmp",
                    "auth": "wrong",
                },
                {
                    "name": "garbage",
                    "address": f"127.0.0.1:{garbage.port}",
                    "protocol": "snmp",
                    "auth": "good",
                },
                {
                    "name": "no-such-host",
                    "address": "no-such-host.invalid",
                    "protocol": "snmp",
                    "auth": "good",
                },
            ],
        }
        config = parse_config(yaml.safe_dump(doc))
        store = Store()

        async def run() -> None:
            scheduler = Scheduler(config, load_profiles(), store, make_driver=make)
            await scheduler.start()
            await asyncio.sleep(7.5)
            await scheduler.stop()

        asyncio.run(run())
        assert silent.requests > 0  # it really was asked, and really stayed silent

    views = {v.name: v for v in store.snapshot()}
    assert views["healthy"].up
    reasons = {name: (v.last.reason if v.last else None) for name, v in views.items()}
    assert reasons == {
        "healthy": "",
        "silent": "timeout",
        "wrong-community": "timeout",
        "garbage": "protocol",
        "no-such-host": "unreachable",
    }
    for name in ("silent", "wrong-community", "garbage", "no-such-host"):
        assert not views[name].up
        assert views[name].last_success_at == 0.0
        last = views[name].last
        assert last is not None and last.data is None  # readings dropped, not stale
    # The healthy target kept its 1 s interval while the others failed (and backed off):
    # the first poll comes within the start spread (< 1 s), then one per second.
    gaps = [b - a for a, b in itertools.pairwise(healthy_polls)]
    assert len(healthy_polls) >= 6, healthy_polls
    assert max(gaps) < 1.5, gaps


def test_agent_whose_walk_never_advances_costs_only_its_tables() -> None:
    from tests.peers import LoopingAgent
    from tests.util import poll_once, snmp_config

    with LoopingAgent() as agent:
        config = snmp_config(agent.port, "public", name="looping")
        result = asyncio.run(poll_once(config))
    # Each walk stops at the first repeated OID; the tables are reported as failed and
    # nothing from them is exported, while scalars answered by GET are kept.
    assert result.data is not None
    assert result.data.partial_errors
    assert all("walk stuck" in e for e in result.data.partial_errors)
    assert not [r for r in result.data.readings if r.quantity.value == "humidity"]
    assert agent.requests < 100  # a handful per table, never an endless walk
