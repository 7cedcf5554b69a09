"""Vertiv/Liebert GP environmental and conditions profiles against snmpsim."""

from __future__ import annotations

import asyncio

import pytest

from poller.simulator.snmpsim import SnmpSim
from tests.util import (
    poll_once,
    readings,
    snmp_config,
)

pytestmark = pytest.mark.integration


def test_liebert_water_under_floor_condition(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "liebert-crac-leak")))
    got = readings(result)
    assert result.data is not None and result.data.info.profile == "liebert-gp-env"
    assert result.data.info.model == "Liebert DS"
    # An active lgpConditionWaterUnderFloor row: leak detected under the floor.
    assert got[("leak", "water under floor", "")] == 1
    leak = next(r for r in result.data.readings if r.quantity == "leak")
    assert leak.location == "floor"
    # A high return-air temperature warning (142.11) and an alarm-type condition.
    assert got[("status", "high temperature", "temperature")] == "degraded"
    assert got[("status", "alarms", "cooling")] == "failed"
    assert got[("status", "warnings", "cooling")] == "degraded"
    assert got[("status", "airflow", "cooling")] == "ok"
    assert got[("status", "general alarm", "cooling")] == "degraded"
    # Environmental tables: descriptions are OIDs mapped to names and locations.
    assert got[("temperature", "supply air", "")] == 17
    assert got[("temperature", "return air", "")] == 26
    assert got[("temperature", "return air", "high.degraded")] == 32
    assert got[("humidity", "return air", "low.degraded")] == pytest.approx(0.25)
    by_sensor = {r.sensor: r.location for r in result.data.readings if r.location}
    assert by_sensor["supply air"] == "supply"
    assert by_sensor["return air"] == "return"


def test_liebert_no_active_condition_means_dry(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "liebert-crac")))
    got = readings(result)
    # The conditions table is empty: leak is exported as 0, not left out.
    assert got[("leak", "water under floor", "")] == 0
    assert got[("status", "alarms", "cooling")] == "ok"
    assert got[("status", "high temperature", "temperature")] == "ok"
    assert got[("status", "general alarm", "cooling")] == "ok"
