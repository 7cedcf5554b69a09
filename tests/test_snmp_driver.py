"""SNMP driver logic with a fake transport that records what was asked (no network)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from poller.driver import DriverContext, PollSpec
from poller.errors import DeviceTimeoutError, ProtocolError, UnsupportedError
from poller.profiles import load_profiles
from poller.snmp.driver import SnmpDriver
from poller.snmp.profile import SYS_DESCR, SYS_OBJECT_ID
from tests.util import snmp_config

RawValue = None | str | bytes | int | float


class FakeTransport:
    """Serves a dict of OID -> value; chosen subtrees fail; records every request."""

    def __init__(self, values: dict[str, RawValue], failing: dict[str, Exception] | None = None):
        self.values = values
        self.failing = failing or {}
        self.gets: list[list[str]] = []
        self.walks: list[str] = []
        self.bulks: dict[str, int | None] = {}

    async def get_many(self, oids: Sequence[str]) -> dict[str, RawValue]:
        self.gets.append(list(oids))
        return {o: self.values[o] for o in oids if o in self.values}

    async def walk(
        self,
        oid: str,
        stop: str | None = None,
        columns: int = 1,
        max_repetitions: int | None = None,
    ) -> list[tuple[str, RawValue]]:
        self.walks.append(oid)
        self.bulks[oid] = max_repetitions
        for prefix, exc in self.failing.items():
            if oid.startswith(prefix):
                raise exc
        key = lambda o: tuple(int(p) for p in o.split("."))  # noqa: E731
        rows = sorted(
            ((o, v) for o, v in self.values.items() if o.startswith(oid + ".")),
            key=lambda item: key(item[0]),
        )
        return [(o, v) for o, v in rows if stop is None or key(o) < key(stop)]

    async def lands_in(self, subtree: str) -> bool:
        self.walks.append(f"getnext {subtree}")
        return any(o.startswith(subtree + ".") for o in self.values)

    def close(self) -> None:
        pass

    def lane(self, number: int) -> FakeTransport:
        return self


class SlowLanes(FakeTransport):
    """Every walk takes `delay` seconds; records how many were in flight at once, per lane."""

    def __init__(self, values: dict[str, RawValue], delay: float) -> None:
        super().__init__(values)
        self.delay = delay
        self.inflight = 0
        self.most = 0
        self.lanes_used: set[int] = set()

    def lane(self, number: int) -> FakeTransport:
        self.lanes_used.add(number)
        return self

    async def walk(
        self,
        oid: str,
        stop: str | None = None,
        columns: int = 1,
        max_repetitions: int | None = None,
    ) -> list[tuple[str, RawValue]]:
        self.inflight += 1
        self.most = max(self.most, self.inflight)
        try:
            await asyncio.sleep(self.delay)
            return await super().walk(oid, stop, columns, max_repetitions)
        finally:
            self.inflight -= 1


UPS = {
    SYS_DESCR: b"Some UPS card",
    SYS_OBJECT_ID: "1.3.6.1.4.1.99999.1",
    "1.3.6.1.2.1.33.1.1.1.0": b"ACME",  # upsIdentManufacturer
    "1.3.6.1.2.1.33.1.2.4.0": 55,  # upsEstimatedChargeRemaining
    "1.3.6.1.2.1.33.1.4.1.0": 5,  # upsOutputSource battery
    "1.3.6.1.2.1.33.1.3.3.1.3.1": 0,  # upsInputVoltage line 1 (mains gone)
    "1.3.6.1.2.1.33.1.4.4.1.2.1": 229,  # upsOutputVoltage line 1
    "1.3.6.1.2.1.33.1.4.4.1.5.1": 37,  # upsOutputPercentLoad
}


def driver(transport: FakeTransport, profile: str | None = None) -> SnmpDriver:
    config = snmp_config(161, "c", profile=profile)
    spec = PollSpec.from_config(config, config.targets[0])
    return SnmpDriver(spec, DriverContext(load_profiles()), transport)


def test_detects_by_presence_and_reads_values() -> None:
    fake = FakeTransport(dict(UPS))
    drv = driver(fake)
    data = asyncio.run(drv.poll())
    assert data.info.profile == "rfc1628-ups"
    got = {(r.quantity.value, r.sensor): (r.state or r.value) for r in data.readings}
    assert got[("battery_charge", "battery")] == pytest.approx(0.55)
    assert got[("ups_power_source", "output")] == "battery"
    assert got[("voltage", "input")] == 0  # a real 0 V on the input is kept
    # Detection asked for sysDescr/sysObjectID, then probed the MIBs' own objects: one GET
    # for the oid_exists scalars and one GETNEXT per subtree.
    assert fake.gets[0] == [SYS_DESCR, SYS_OBJECT_ID]
    probes = [w for w in fake.walks if w.startswith("getnext ")]
    assert "getnext 1.3.6.1.2.1.33.1" in probes or "1.3.6.1.2.1.33.1.1.1.0" in fake.gets[1]
    # Identity filtering keeps detection to a handful of requests, whatever the profile count.
    assert drv.detection_requests == 2 + len(probes) or drv.detection_requests == 1 + len(probes)
    assert drv.detection_requests <= 6


def test_partial_result_when_one_table_fails() -> None:
    failing = {"1.3.6.1.2.1.33.1.3.3.1": ProtocolError("genErr")}  # the input table
    data = asyncio.run(driver(FakeTransport(dict(UPS), failing)).poll())
    sensors = {(r.quantity.value, r.sensor) for r in data.readings}
    assert ("voltage", "input") not in sensors
    assert ("voltage", "output") in sensors
    assert ("battery_charge", "battery") in sensors
    assert len(data.partial_errors) == 1
    assert "genErr" in data.partial_errors[0]


def test_two_table_timeouts_fail_the_poll() -> None:
    failing = {"1.3.6.1.2.1.33.1": DeviceTimeoutError("no answer")}
    with pytest.raises(DeviceTimeoutError):
        asyncio.run(driver(FakeTransport(dict(UPS), failing)).poll())


def test_unknown_device_is_unsupported() -> None:
    fake = FakeTransport({SYS_DESCR: b"Toaster 3000", SYS_OBJECT_ID: "1.3.6.1.4.1.4242.7"})
    with pytest.raises(
        UnsupportedError, match=r"no profile matches sysObjectID 1\.3\.6\.1\.4\.1\.4242\.7"
    ):
        asyncio.run(driver(fake).poll())


def test_swapped_device_is_detected_again() -> None:
    fake = FakeTransport(dict(UPS))
    drv = driver(fake)
    asyncio.run(drv.poll())
    assert drv.profile is not None
    fake.values[SYS_OBJECT_ID] = "1.3.6.1.4.1.318.1.3.27"  # now an APC Smart-UPS
    asyncio.run(drv.poll())
    assert drv.profile is None  # the next poll detects afresh


def test_configured_profile_skips_detection() -> None:
    fake = FakeTransport(dict(UPS))
    data = asyncio.run(driver(fake, profile="rfc1628-ups").poll())
    assert data.info.profile == "rfc1628-ups"
    assert [SYS_DESCR, SYS_OBJECT_ID] not in fake.gets
    assert SYS_OBJECT_ID not in fake.gets[0]


def test_unchanged_answers_reuse_last_result() -> None:
    """The same answers give last poll's result object (the exporter then reuses its lines);
    any change, including an INTEGER 1 that became a BOOLEAN true, evaluates afresh."""
    fake = FakeTransport(dict(UPS))
    drv = driver(fake)
    first = asyncio.run(drv.poll())
    assert asyncio.run(drv.poll()) is first
    fake.values["1.3.6.1.2.1.33.1.2.4.0"] = 56
    changed = asyncio.run(drv.poll())
    assert changed is not first
    assert changed == asyncio.run(driver(FakeTransport(dict(fake.values))).poll())
    assert asyncio.run(drv.poll()) is changed
    fake.values["1.3.6.1.2.1.33.1.2.4.0"] = 1
    ones = asyncio.run(drv.poll())
    fake.values["1.3.6.1.2.1.33.1.2.4.0"] = True  # == 1, but reads as text "True"
    booleans = asyncio.run(drv.poll())
    assert booleans is not ones
    assert booleans == asyncio.run(driver(FakeTransport(dict(fake.values))).poll())


def test_walk_plan_adapts_to_table_size() -> None:
    # upsOutputEntry: three needed columns (2, 4, 5). One row -> one walk of the entry up to
    # column 5; once the driver has seen many rows, column walks are cheaper.
    values = dict(UPS)
    fake = FakeTransport(values)
    drv = driver(fake, profile="rfc1628-ups")
    asyncio.run(drv.poll())
    entry = "1.3.6.1.2.1.33.1.4.4.1"
    assert entry in fake.walks
    assert f"{entry}.2" not in fake.walks
    for index in range(2, 60):
        values[f"{entry}.2.{index}"] = 230
    fake.walks.clear()
    asyncio.run(drv.poll())  # learns the row count
    fake.walks.clear()
    asyncio.run(drv.poll())
    assert f"{entry}.2" in fake.walks
    assert entry not in fake.walks
    # 59 rows: the column walk asks for all of them at once, within the cap.
    assert fake.bulks[f"{entry}.2"] == 50


def test_getbulk_is_sized_from_last_poll_rows() -> None:
    fake = FakeTransport(dict(UPS))
    drv = driver(fake, profile="rfc1628-ups")
    asyncio.run(drv.poll())
    entry = "1.3.6.1.2.1.33.1.4.4.1"
    assert fake.bulks[entry] == 10  # never seen: the target's max_repetitions
    asyncio.run(drv.poll())
    # One row, walked up to column 5: 5 varbinds and one to see the end, in one request.
    assert fake.bulks[entry] == 6


def test_configured_max_repetitions_is_a_cap() -> None:
    values = dict(UPS)
    entry = "1.3.6.1.2.1.33.1.4.4.1"
    for index in range(2, 60):
        values[f"{entry}.2.{index}"] = 230
    fake = FakeTransport(values)
    config = snmp_config(161, "c", profile="rfc1628-ups", max_repetitions=5)
    spec = PollSpec.from_config(config, config.targets[0])
    drv = SnmpDriver(spec, DriverContext(load_profiles()), fake)
    for _ in range(3):
        asyncio.run(drv.poll())
    assert max(b for b in fake.bulks.values() if b is not None) <= 5


def test_get_splits_when_the_agent_answers_too_big() -> None:
    from poller.simulator.replay import ReplayAgent
    from poller.simulator.snmpsim import RECORDINGS

    # A card whose answers must fit 300 bytes: a GET of every scalar in one PDU is tooBig.
    agent = ReplayAgent({"apc-smartups": RECORDINGS / "apc-smartups.snmprec"}, max_size=300)
    with agent:
        config = snmp_config(agent.port, "apc-smartups", profile="apc-ups")
        spec = PollSpec.from_config(config, config.targets[0])
        drv = SnmpDriver(spec, DriverContext(load_profiles()))
        try:
            first = asyncio.run(drv.poll())
            again = asyncio.run(drv.poll())
        finally:
            asyncio.run(drv.close())
        assert agent.stats.too_big >= 1
    # Nothing lost to the tooBig answer: same readings as an agent without the limit.
    with ReplayAgent({"apc-smartups": RECORDINGS / "apc-smartups.snmprec"}) as roomy:
        config = snmp_config(roomy.port, "apc-smartups", profile="apc-ups")
        spec = PollSpec.from_config(config, config.targets[0])
        ref = SnmpDriver(spec, DriverContext(load_profiles()))
        try:
            expected = asyncio.run(ref.poll())
        finally:
            asyncio.run(ref.close())
    assert {r.series for r in first.readings} == {r.series for r in expected.readings}
    assert {r.series for r in again.readings} == {r.series for r in expected.readings}


def test_unseen_wide_table_with_few_needed_columns_is_walked_by_column() -> None:
    from poller.snmp.driver import _Plan

    drv = driver(FakeTransport(dict(UPS)), profile="rfc1628-ups")
    entry = "1.3.6.1.4.1.99.1.1"
    plan = _Plan((), ((entry, (f"{entry}.2", f"{entry}.71"), 71),))
    walks = drv._plan_walks(plan)
    # Walking the entry up to column 71 would read 69 columns nobody needs, per row.
    assert [w.oid for w in walks] == [f"{entry}.2", f"{entry}.71"]
    dense = _Plan((), ((entry, (f"{entry}.2", f"{entry}.3", f"{entry}.4"), 4),))
    assert [w.oid for w in drv._plan_walks(dense)] == [entry]


SIX_TABLES = """
name: six-tables
match: {sys_object_id: [1.3.6.1.4.1.99999.9]}
metrics:
""" + "".join(
    f"  - {{quantity: temperature, table: 1.3.6.1.4.1.99999.9.{t}.1, value: 2, "
    f"sensor: {{value: t{t}}}}}\n"
    for t in range(1, 7)
)


@pytest.mark.parametrize("inflight", [1, 2, 4])
def test_tables_are_walked_up_to_max_inflight_at_once(inflight: int, tmp_path: Path) -> None:
    (tmp_path / "six.yaml").write_text(SIX_TABLES)
    values: dict[str, RawValue] = {SYS_OBJECT_ID: "1.3.6.1.4.1.99999.9"}
    for table in range(1, 7):
        values[f"1.3.6.1.4.1.99999.9.{table}.1.2.1"] = 20 + table
    config = snmp_config(161, "c", profile="six-tables")

    def poll(inflight: int, fake: FakeTransport) -> list[str]:
        target = config.targets[0].model_copy(update={"max_inflight": inflight})
        drv = SnmpDriver(
            PollSpec.from_config(config, target), DriverContext(load_profiles([tmp_path])), fake
        )
        return sorted(repr(r) for r in asyncio.run(drv.poll()).readings)

    fake = SlowLanes(values, delay=0.05)
    readings = poll(inflight, fake)
    assert len(fake.walks) == 6  # one walk per table
    assert fake.most == inflight  # never more in flight than the target allows
    assert fake.lanes_used == (set(range(inflight)) if inflight > 1 else set())
    assert len(readings) == 6
    assert readings == poll(1, FakeTransport(values))  # the same readings, however fetched
