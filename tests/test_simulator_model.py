"""The room model and scenario scripts on their own: physics without the network."""

from __future__ import annotations

import pytest

from poller.simulator.ipmi_bmc import Bmc, sdr_record, sensors_for
from poller.simulator.model import RoomModel
from poller.simulator.room import servers
from poller.simulator.scenarios import FAN_FAILURE_SERVER, OUTAGE, SCENARIOS, START


def room(scenario: str) -> RoomModel:
    return RoomModel(servers(), list(SCENARIOS[scenario].events))


def test_quiet_room_settles_and_stays_healthy() -> None:
    model = room("quiet")
    for minute in range(1, 61):
        model.advance(minute * 60.0)
        assert 20.0 < model.room < 22.0
        assert all(20.0 < s.inlet < 25.0 for s in model.servers.values())
        assert all(min(s.fans) > 4000 for s in model.servers.values())
        assert model.ups.mains and model.ups.charge == pytest.approx(1.0)
        assert 0.40 < model.humidity < 0.50 and not model.leak_rope_wet
    assert model.log == []


def test_crac_failure_warms_inlets_about_one_degree_per_minute() -> None:
    model = room("crac-failure")
    model.advance(START)
    before = {n: s.inlet for n, s in model.servers.items()}
    supply = model.crac.supply
    model.advance(START + 600.0)
    rates = [(s.inlet - before[n]) / 10.0 for n, s in model.servers.items()]
    assert all(0.8 < r < 1.2 for r in rates), rates
    assert model.crac.supply > supply + 5


def test_mains_loss_drains_the_battery_then_recharges() -> None:
    model = room("mains-loss")
    model.advance(START + 1)
    assert not model.ups.mains
    runtime = model.ups.runtime
    model.advance(START + OUTAGE - 1)
    assert not model.ups.mains
    assert 0.5 < model.ups.charge < 0.8 and model.ups.runtime < runtime / 2 + 600
    low = model.ups.charge
    model.advance(START + OUTAGE + 600)
    assert model.ups.mains and model.ups.charge > low
    assert [what for _, what in model.log] == ["mains power fails", "mains power returns"]


def test_roof_leak_wets_the_rope_and_raises_humidity() -> None:
    model = room("roof-leak")
    model.advance(START - 1)
    assert not model.leak_rope_wet
    model.advance(START + 600)
    assert model.leak_rope_wet and model.crac.floor_wet
    assert model.humidity > 0.60


def test_fan_failure_stops_exactly_one_fan() -> None:
    model = room("fan-failure")
    model.advance(START + 60)
    stopped = [
        (n, i) for n, s in model.servers.items() for i, rpm in enumerate(s.fans) if rpm < 100
    ]
    assert stopped == [(FAN_FAILURE_SERVER, 2)]


def test_events_fire_at_their_time_whatever_the_step() -> None:
    model = room("mains-loss")
    model.advance(START + OUTAGE + 1000)  # one big jump
    assert [round(at) for at, _ in model.log] == [START, START + OUTAGE]


def test_sdr_records_decode_with_pyghmi() -> None:
    """pyghmi's decoder (what hwpoller and ipmitool-like clients use) reads our records."""
    from pyghmi.ipmi import sdr
    from pyghmi.ipmi.private import constants

    model = room("quiet")
    for server in model.servers.values():
        bmc = Bmc(model, server)
        for i, sensor in enumerate(sensors_for(server)):
            entry = sdr.SDREntry(bytearray(sdr_record(i + 1, sensor)), constants, False, 674, 1)
            assert entry.sensor_name == sensor.name
            assert entry.sensor_number == sensor.number
            assert entry.has_thresholds == bool(sensor.limits)
        code, data = bmc.handle(0x04, 0x2D, bytes([0x99]), 0)
        assert code == 0xCB and data == b""
