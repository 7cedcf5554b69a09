"""Profile evaluation, pure: profiles built from YAML text, values given as Fetched. No network."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from poller.model import LimitType, Location, Quantity, Reading
from poller.profiles import ProfileSet
from poller.snmp.evaluate import Fetched, normalize
from poller.snmp.profile import Profile, SnmpProfile, candidates

T = "1.3.6.1.4.1.9999.1.1"  # a table entry OID used throughout


def profile(text: str) -> Profile:
    """A Profile from one YAML document (no includes)."""
    spec = SnmpProfile.model_validate(yaml.safe_load(text))
    return Profile(spec=spec, source="<test>", metrics=tuple(spec.metrics))


def columns(**cols: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"c2": {...}} -> {"T.2": {...}}: column values of table T by row index."""
    return {f"{T}.{name.removeprefix('c')}": rows for name, rows in cols.items()}


def run(text: str, fetched: Fetched) -> list[Reading]:
    return list(normalize(profile(text), fetched).readings)


def values(readings: list[Reading]) -> dict[tuple[str, str], float | str]:
    out: dict[tuple[str, str], float | str] = {}
    for r in readings:
        key = (r.sensor, r.limit_type.value if r.limit_type else "")
        out[key] = r.state if r.state is not None else r.value
    return out


# --- conditions ---------------------------------------------------------------------------


def test_condition_match_and_not_match_split_rows_by_name() -> None:
    text = f"""
name: t
metrics:
  - quantity: leak
    table: {T}
    value: 3
    sensor: {{column: 2}}
    location: floor
    when: [{{column: 2, match: '(?i)leak|water'}}]
    map: {{1: 0, 3: 1}}
  - quantity: status
    hw_type: contact
    table: {T}
    value: 3
    sensor: {{column: 2}}
    when: [{{column: 2, not_match: '(?i)leak|water'}}]
    map: {{1: ok, 3: failed}}
"""
    fetched = Fetched(
        columns=columns(
            c2={"1": "Leak Rope Row B", "2": "Rack Door", "3": "WATER spot"},
            c3={"1": 3, "2": 3, "3": 1},
        )
    )
    got = run(text, fetched)
    leaks = {r.sensor: r.value for r in got if r.quantity == Quantity.LEAK}
    assert leaks == {"Leak Rope Row B": 1.0, "WATER spot": 0.0}
    assert all(r.location == Location.FLOOR for r in got if r.quantity == Quantity.LEAK)
    contacts = [(r.sensor, r.state) for r in got if r.quantity == Quantity.STATUS]
    assert contacts == [("Rack Door", "failed")]


def test_condition_on_a_column_of_another_table() -> None:
    other = "1.3.6.1.4.1.9999.2.1"
    text = f"""
name: t
metrics:
  - quantity: temperature
    table: {T}
    value: 2
    when: [{{table: {other}, column: 5, not_in: [1]}}]
"""
    fetched = Fetched(
        columns={f"{T}.2": {"1": 20, "2": 21}, f"{other}.5": {"1": 1, "2": 2}},
    )
    assert values(run(text, fetched)) == {("2", ""): 21.0}


def test_condition_needs_exactly_one_test() -> None:
    with pytest.raises(ValidationError, match="exactly one of in, not_in, match or not_match"):
        profile(
            f"""
name: t
metrics:
  - {{quantity: temperature, table: {T}, value: 2, when: [{{column: 3, in: [1], match: x}}]}}
"""
        )
    with pytest.raises(ValidationError, match="bad regular expression"):
        profile(
            f"""
name: t
metrics:
  - {{quantity: temperature, table: {T}, value: 2, when: [{{column: 3, match: '('}}]}}
"""
        )


# --- per-row factors ----------------------------------------------------------------------

ENTITY_LIKE = f"""
name: t
metrics:
  - quantity: temperature
    table: {T}
    value: 4
    multiply_by: [{{column: 2, map: {{8: 0.001, 9: 1, 10: 1000}}}}]
    divide_by: [{{column: 3, map: {{0: 1, 1: 10, 2: 100}}}}]
    limits:
      high.critical: {{column: 5}}
"""


def test_multiply_and_divide_by_row_factors_scale_value_and_limits() -> None:
    fetched = Fetched(
        columns=columns(
            c2={"1": 9, "2": 8, "3": 9},  # units, milli, units
            c3={"1": 1, "2": 0, "3": 2},  # precision
            c4={"1": 231, "2": 34500, "3": 2456},
            c5={"1": 450, "2": 60000, "3": 5000},
        )
    )
    got = values(run(ENTITY_LIKE, fetched))
    assert got[("1", "")] == pytest.approx(23.1)
    assert got[("1", "high.critical")] == pytest.approx(45.0)
    assert got[("2", "")] == pytest.approx(34.5)
    assert got[("2", "high.critical")] == pytest.approx(60.0)
    assert got[("3", "")] == pytest.approx(24.56)


def test_unknown_or_zero_factor_omits_the_reading() -> None:
    fetched = Fetched(
        columns=columns(c2={"1": 99, "2": 9}, c3={"1": 0, "2": 7}, c4={"1": 1, "2": 1})
    )
    # scale 99 and precision 7 are not in the maps: no reading rather than a wrong number
    assert run(ENTITY_LIKE, fetched) == []
    text = f"""
name: t
metrics:
  - {{quantity: fan_speed, table: {T}, value: 3, divide_by: [{{column: 5}}]}}
"""
    fetched = Fetched(columns=columns(c3={"1": 3000, "2": 3000}, c5={"1": 0, "2": 10}))
    assert values(run(text, fetched)) == {("2", ""): 300.0}


# --- aggregates ---------------------------------------------------------------------------

CONDITIONS = f"""
name: t
metrics:
  - quantity: leak
    table: {T}
    value: 2
    aggregate: any
    sensor: water under floor
    location: floor
    when:
      - {{oid: 1.3.6.1.4.1.9999.3.0, not_in: ['']}}
      - {{column: 12, not_in: [2]}}
      - {{column: 2, match: '\\.14$'}}
  - quantity: status
    hw_type: cooling
    table: {T}
    value: 2
    aggregate: count
    sensor: alarms
    when: [{{column: 10, in: [6, 8]}}]
    map: {{0: ok}}
    default: failed
"""
PRESENT = {"1.3.6.1.4.1.9999.3.0": 2}


def test_aggregate_any_is_one_while_a_matching_row_exists() -> None:
    fetched = Fetched(
        scalars=PRESENT,
        columns=columns(
            c2={"5": "1.3.6.1.4.1.476.1.42.3.2.1.14", "6": "1.3.6.1.4.1.476.1.42.3.2.1.5"},
            c10={"5": 6, "6": 4},
            c12={"5": 1, "6": 1},
        ),
    )
    got = run(CONDITIONS, fetched)
    leak = next(r for r in got if r.quantity == Quantity.LEAK)
    assert (leak.sensor, leak.value, leak.location) == ("water under floor", 1.0, Location.FLOOR)
    status = next(r for r in got if r.quantity == Quantity.STATUS)
    assert (status.sensor, status.state) == ("alarms", "failed")


def test_aggregate_of_an_empty_table_is_zero_not_absent() -> None:
    fetched = Fetched(scalars=PRESENT, columns=columns(c2={}, c10={}, c12={}))
    got = values(run(CONDITIONS, fetched))
    assert got == {("water under floor", ""): 0.0, ("alarms", ""): "ok"}


def test_aggregate_ignores_inactive_rows() -> None:
    fetched = Fetched(
        scalars=PRESENT,
        columns=columns(c2={"5": "1.3.6.1.4.1.476.1.42.3.2.1.14"}, c10={"5": 6}, c12={"5": 2}),
    )
    assert values(run(CONDITIONS, fetched))[("water under floor", "")] == 0.0


def test_aggregate_gated_on_a_scalar_reports_nothing_without_the_mib() -> None:
    fetched = Fetched(columns=columns(c2={}, c10={}, c12={}))  # gate scalar missing
    got = values(run(CONDITIONS, fetched))
    assert ("water under floor", "") not in got
    assert got[("alarms", "")] == "ok"  # the ungated one still reports


def test_aggregate_of_a_failed_walk_is_skipped_with_the_reason() -> None:
    fetched = Fetched(scalars=PRESENT, failed={f"{T}.2": "walk x: timeout"})
    data = normalize(profile(CONDITIONS), fetched)
    assert data.readings == ()
    assert data.partial_errors == ("walk x: timeout",)


def test_aggregate_shape_is_checked() -> None:
    with pytest.raises(ValidationError, match="needs a sensor name"):
        profile(f"name: t\nmetrics:\n  - {{quantity: leak, table: {T}, value: 2, aggregate: any}}")
    with pytest.raises(ValidationError, match="only applies to table metrics"):
        profile("name: t\nmetrics:\n  - {quantity: leak, oid: 1.3.6.1.1.0, aggregate: any}")
    with pytest.raises(ValidationError, match="cannot come from a column"):
        profile(
            f"name: t\nmetrics:\n  - {{quantity: leak, table: {T}, value: 2, aggregate: any, "
            "sensor: {column: 3}}"
        )


# --- refs ---------------------------------------------------------------------------------


def test_ref_invalid_drops_an_unset_limit_only() -> None:
    text = f"""
name: t
metrics:
  - quantity: temperature
    table: {T}
    value: 4
    invalid: [-99]
    limits:
      high.degraded: {{column: 5, invalid: [-99, 0]}}
"""
    fetched = Fetched(
        columns=columns(c4={"1": 22, "2": 38, "3": -99}, c5={"1": 42, "2": 0, "3": 5})
    )
    assert values(run(text, fetched)) == {("1", ""): 22, ("1", "high.degraded"): 42, ("2", ""): 38}


def test_ref_format_and_index_template_build_names() -> None:
    text = f"""
name: t
metrics:
  - quantity: temperature
    table: {T}
    value: 4
    sensor: {{column: 3, map: {{11: 'ambient {{index}}'}}, default: 'sensor {{index}}',
              format: '{{value}} (probe)'}}
"""
    fetched = Fetched(columns=columns(c3={"0.1": 11, "0.2": 6}, c4={"0.1": 22, "0.2": 40}))
    assert sorted(r.sensor for r in run(text, fetched)) == [
        "ambient 0.1 (probe)",
        "sensor 0.2 (probe)",
    ]


def test_unit_enum_column_converts_value_and_whole_degree_limits() -> None:
    # AKCP style: raw tenths in the unit of a per-row enum, thresholds in whole degrees.
    text = f"""
name: t
metrics:
  - quantity: temperature
    table: {T}
    value: 14
    scale: 0.1
    unit: {{column: 12, map: {{0: fahrenheit, 1: celsius}}}}
    limits:
      high.critical: {{column: 8, scale: 1}}
"""
    fetched = Fetched(
        columns=columns(c14={"0": 218, "1": 770}, c12={"0": 1, "1": 0}, c8={"0": 32, "1": 95})
    )
    got = values(run(text, fetched))
    assert got[("0", "")] == pytest.approx(21.8)
    assert got[("1", "")] == pytest.approx(25.0)
    assert got[("1", "high.critical")] == pytest.approx(35.0)


# --- the compiled plan ----------------------------------------------------------------------


def test_plan_is_compiled_once_and_reused_across_polls_with_changing_values() -> None:
    """The compiled plan is the profile's own (shared by every target using it); each poll's
    answer is evaluated afresh, whatever the previous polls held."""
    text = f"""
name: t
metrics:
  - quantity: temperature
    table: {T}
    value: 3
    sensor: {{column: 2, format: "Probe {{value}}"}}
    location_rules: [{{match: '(?i)inlet', location: inlet}}]
    invalid: [-1]
    limits:
      high.critical: {{column: 4, invalid: [0]}}
"""
    loaded = profile(text)
    assert loaded.plan is loaded.plan
    first = Fetched(columns=columns(c2={"1": b"Inlet"}, c3={"1": 20}, c4={"1": 40}))
    second = Fetched(columns=columns(c2={"1": b"Rear"}, c3={"1": -1, "2": 30}, c4={"1": 0}))
    got = list(normalize(loaded, first).readings)
    assert [(r.sensor, r.value, r.location, r.limit_type) for r in got] == [
        ("Probe Inlet", 20.0, Location.INLET, None),
        ("Probe Inlet", 40.0, Location.INLET, LimitType.HIGH_CRITICAL),
    ]
    got = list(normalize(loaded, second).readings)
    # Row 1 is now invalid; row 2 has no name (the format applies to a value), so its index.
    assert [(r.sensor, r.value, r.location) for r in got] == [("2", 30.0, Location.OTHER)]


def test_location_rules_stay_right_for_more_sensor_names_than_are_remembered() -> None:
    text = f"""
name: t
metrics:
  - quantity: temperature
    table: {T}
    value: 3
    sensor: {{column: 2}}
    location_rules: [{{match: 'in$', location: inlet}}, {{match: 'out$', location: exhaust}}]
"""
    loaded = profile(text)
    names = {str(i): f"probe {i} {('in', 'out', 'mid')[i % 3]}" for i in range(3000)}
    fetched = Fetched(columns=columns(c2=names, c3=dict.fromkeys(names, 21)))
    for _ in range(2):
        got = normalize(loaded, fetched).readings
        assert len(got) == 3000
        expected = {"in": Location.INLET, "out": Location.EXHAUST, "mid": Location.OTHER}
        assert all(r.location == expected[r.sensor.rsplit(" ", 1)[1]] for r in got)


# --- matching -----------------------------------------------------------------------------


def test_candidates_rank_sys_object_id_then_presence_then_generic() -> None:
    specs = {
        "aaa-generic": "name: aaa-generic\nmatch: {oid_exists: [1.3.6.1.2.1.47.1.4.1.0], "
        "fallback: true}",
        "zzz-ups": "name: zzz-ups\nmatch: {oid_exists: [1.3.6.1.2.1.33.1.1.1.0]}",
        "vendor": "name: vendor\nmatch: {sys_object_id: [1.3.6.1.4.1.318.1.3.8]}",
    }
    profiles = ProfileSet({name: profile(text) for name, text in specs.items()})
    names = [p.name for p in candidates(profiles, "1.3.6.1.4.1.99.1", "")]
    assert names == ["zzz-ups", "aaa-generic"]
    names = [p.name for p in candidates(profiles, "1.3.6.1.4.1.318.1.3.8.4", "")]
    assert names == ["vendor", "zzz-ups", "aaa-generic"]
