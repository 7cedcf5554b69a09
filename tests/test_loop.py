"""The event loop choice (poller.loop): uvloop by default, asyncio's own on request; an SNMP
poll reads the same on both."""

from __future__ import annotations

import asyncio

import pytest

from poller import loop as event_loop
from poller.cli import build_parser
from poller.driver import DriverContext, PollSpec
from poller.model import DeviceData
from poller.profiles import load_profiles
from poller.simulator.replay import ReplayAgent
from poller.simulator.snmpsim import RECORDINGS
from poller.snmp.driver import SnmpDriver
from tests.util import snmp_config


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]


@pytest.mark.parametrize("name", event_loop.EVENT_LOOPS)
def test_run_uses_the_chosen_loop(name: str) -> None:
    assert event_loop.run(loop_module(), name) == name


def test_uvloop_is_the_default_and_a_wrong_name_is_refused() -> None:
    assert event_loop.run(loop_module()) == "uvloop"
    assert build_parser().parse_args(["run", "--config.file", "x"]).event_loop == "uvloop"
    chosen = build_parser().parse_args(["run", "--config.file", "x", "--event-loop", "asyncio"])
    assert chosen.event_loop == "asyncio"
    with pytest.raises(ValueError, match="not one of uvloop, asyncio"):
        event_loop.factory("trio")


def test_snmp_polls_read_the_same_on_both_loops() -> None:
    """The native v2c client (datagrams by add_reader, request-id matching, timers) and the
    gufo-snmp one, polled on uvloop and on asyncio's loop: the same readings."""
    recordings = {n: RECORDINGS / f"{n}.snmprec" for n in ("apc-smartups", "apc-emu", "netbotz")}
    profiles = load_profiles()
    with ReplayAgent(recordings) as agent:

        async def poll(community: str, client: str) -> DeviceData:
            config = snmp_config(agent.port, community, name="device", snmp_client=client)
            spec = PollSpec.from_config(config, config.targets[0])
            driver = SnmpDriver(spec, DriverContext(profiles))
            try:
                await driver.poll()
                return await driver.poll()
            finally:
                await driver.close()

        for community in recordings:
            for client in ("native", "gufo"):
                on_uvloop = event_loop.run(poll(community, client), "uvloop")
                on_asyncio = event_loop.run(poll(community, client), "asyncio")
                assert on_uvloop == on_asyncio, (community, client)
                assert len(on_uvloop.readings) > 5
