"""Big tables: a 10,000-row ENTITY-SENSOR table is read within a normal poll deadline, and a
table beyond the row limit is dropped visibly (partial failure), not silently."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from poller.driver import DriverContext, PollSpec
from poller.exporter import exposition
from poller.model import DeviceData, PollResult
from poller.profiles import load_profiles
from poller.simulator.replay import ReplayAgent
from poller.snmp.driver import SnmpDriver
from poller.snmp.transport import MAX_TABLE_ROWS
from poller.store import Store
from tests.util import snmp_config

pytestmark = pytest.mark.integration

SENSOR = "1.3.6.1.2.1.99.1.1.1"  # entPhySensorEntry
NAME = "1.3.6.1.2.1.47.1.1.1.1.7"  # entPhysicalName


def sensor_table(path: Path, rows: int, extra_rows: int = 0) -> None:
    """A recording with `rows` celsius sensors (23.5 degrees, precision 1) named by index;
    `extra_rows` more rows in entPhySensorOperStatus only."""
    lines = [
        "1.3.6.1.2.1.1.1.0|4|big chassis",
        "1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.99999.1",
        "1.3.6.1.2.1.47.1.4.1.0|67|100",
    ]
    lines += [f"{NAME}.{i}|4|sensor {i}" for i in range(1, rows + 1)]
    for column, value in ((1, 8), (2, 9), (3, 1), (4, 235)):
        lines += [f"{SENSOR}.{column}.{i}|2|{value}" for i in range(1, rows + 1)]
    lines += [f"{SENSOR}.5.{i}|2|1" for i in range(1, rows + extra_rows + 1)]
    path.write_text("\n".join(lines) + "\n")


async def _poll_twice(port: int, community: str) -> tuple[DeviceData, DeviceData, int]:
    config = snmp_config(port, community, timeout="24s", interval="30s", retries=0)
    spec = PollSpec.from_config(config, config.targets[0])
    driver = SnmpDriver(spec, DriverContext(load_profiles()))
    try:
        first = await driver.poll()
        second = await driver.poll()
        return first, second, driver.detection_requests
    finally:
        await driver.close()


def test_ten_thousand_rows_are_read(tmp_path: Path) -> None:
    sensor_table(tmp_path / "big.snmprec", 10_000)
    with ReplayAgent({"big": tmp_path / "big.snmprec"}) as agent:
        first, second, _ = asyncio.run(_poll_twice(agent.port, "big"))
        requests_second = agent.stats.requests
    for data in (first, second):
        temps = [r for r in data.readings if r.quantity.value == "temperature"]
        assert len(temps) == 10_000
        assert {r.value for r in temps} == {23.5}
        assert not data.partial_errors
    # The second poll sizes each GETBULK from the rows seen: ~50 varbinds per request.
    assert requests_second < 3 * 6 * 10_000 / 10


def test_table_beyond_the_row_limit_is_dropped_visibly(tmp_path: Path) -> None:
    sensor_table(tmp_path / "huge.snmprec", 10, extra_rows=MAX_TABLE_ROWS + 5)
    with ReplayAgent({"huge": tmp_path / "huge.snmprec"}) as agent:
        _, data, _ = asyncio.run(_poll_twice(agent.port, "huge"))
    assert any(f"more than {MAX_TABLE_ROWS} rows" in e for e in data.partial_errors)
    store = Store()
    store.register("huge", "snmp", {})
    store.record(PollResult("huge", "snmp", True, 1.0, 1.0, data))
    assert b'hwpoller_partial_failures{device="huge"} 1.0' in exposition(store)
