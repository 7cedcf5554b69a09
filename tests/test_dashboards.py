"""Grafana dashboards and provisioning: structure, and every query checked by promtool."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy_support import (
    DASHBOARDS,
    PROMETHEUS_SERIES,
    PUBLIC_METRICS,
    REPO,
    load_yaml,
    metric_names,
    promtool_check_exprs,
    recorded_metrics,
    run,
    tool,
    unknown_label_values,
)

pytestmark = pytest.mark.integration

PROVISIONING = REPO / "grafana" / "provisioning"
DASHBOARD_IDS = [path.stem for path in DASHBOARDS]

# Grafana's built-in interval variables, replaced by a duration so promtool can parse them.
_BUILTIN_DURATIONS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
# $name, ${name} and ${name:format}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"label_values\((.+),\s*(\w+)\)")


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows; row headers themselves excluded."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def _substitute(expr: str) -> str:
    """Replace Grafana variables with values that keep the query valid PromQL."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return _BUILTIN_DURATIONS.get(name, "x")

    return _VARIABLE.sub(value, expr)


def _variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("definition") or variable["query"]
    return query["query"] if isinstance(query, dict) else query


def _queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every PromQL query of a dashboard (panel targets, variable selectors), by a rule name."""
    slug = re.sub(r"\W", "_", dashboard["uid"])
    queries = {}
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            queries[f"{slug}:panel_{panel['id']}_{target['refId']}"] = _substitute(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = _LABEL_VALUES.fullmatch(_variable_query(variable))
            assert match, f"{variable['name']}: expected label_values(selector, label)"
            queries[f"{slug}:var_{variable['name']}"] = _substitute(match.group(1))
    return queries


@pytest.fixture(params=DASHBOARDS, ids=DASHBOARD_IDS)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    """One shipped dashboard, parsed."""
    return _load(request.param)


def test_dashboards_are_grafana_10_json() -> None:
    """Both dashboards parse, with unique uids, a modern schema and the hwpoller tag."""
    assert {"room-overview", "device"} <= set(DASHBOARD_IDS)
    dashboards = [_load(path) for path in DASHBOARDS]
    assert len({d["uid"] for d in dashboards}) == len(dashboards)
    for d in dashboards:
        assert d["schemaVersion"] >= 39
        assert d["id"] is None  # provisioned dashboards get their id from Grafana
        assert d["title"].startswith("hwpoller")
        assert "hwpoller" in d["tags"]


def test_every_panel_has_datasource_and_target(dashboard: dict[str, Any]) -> None:
    """Prometheus data source on panel and targets; at least one non-empty query each."""
    ids = [panel["id"] for panel in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in _panels(dashboard):
        where = f"{dashboard['uid']} panel {panel['id']} ({panel['title']})"
        assert panel["datasource"]["type"] == "prometheus", where
        assert panel["datasource"]["uid"] in ("${datasource}", "prometheus"), where
        assert panel["targets"], f"{where}: no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            assert target["expr"].strip(), where
            assert target["datasource"] == panel["datasource"], where


def test_panels_fit_the_grid_without_overlap(dashboard: dict[str, Any]) -> None:
    """Every panel lies within Grafana's 24 columns and no two panels overlap."""
    cells: dict[tuple[int, int], int] = {}
    for panel in _panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] >= 0
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]


def test_template_variables(dashboard: dict[str, Any]) -> None:
    """A data source picker and site/room/device from label_values, each filtering the next."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("site", "room", "device"):
        assert variables[name]["type"] == "query"
        assert _LABEL_VALUES.fullmatch(_variable_query(variables[name])).group(2) == name
    assert "$site" in _variable_query(variables["room"])
    assert "$room" in _variable_query(variables["device"])


def test_queries_are_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool parses every panel query and variable selector (as recording rules)."""
    result = promtool_check_exprs(_queries(dashboard), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promql_check_rejects_a_broken_query(tmp_path: Path) -> None:
    """The check above can fail: a query with a syntax error is reported by promtool."""
    result = promtool_check_exprs({"broken:query": "sum by (room) (hw_status{state=}"}, tmp_path)
    assert result.returncode != 0
    assert "broken:query" in result.stdout + result.stderr


def test_queries_use_only_public_metrics(dashboard: dict[str, Any]) -> None:
    """Dashboards select DESIGN.md's public metrics, recorded series or ALERTS only."""
    allowed = PUBLIC_METRICS | recorded_metrics() | PROMETHEUS_SERIES
    for name, expr in _queries(dashboard).items():
        assert metric_names(expr) - allowed == set(), name
        assert unknown_label_values(expr) == [], name


def test_room_overview_shows_what_the_room_needs() -> None:
    """Room temperature (recording rule), inlet heat map, leaks, fans, UPS, cooling, devices."""
    dashboard = _load(REPO / "grafana" / "dashboards" / "room-overview.json")
    exprs = " ".join(t["expr"] for p in _panels(dashboard) for t in p["targets"])
    for needle in (
        "site_room:hw_inlet_temperature_celsius:max",
        "site_room:hw_inlet_temperature_celsius:median",
        'location="inlet"',
        "hw_leak_detected",
        'hw_type="fan"',
        "hw_ups_power_source",
        "hw_battery_time_left_seconds",
        'location=~"supply|return"',
        "hwpoller_up",
    ):
        assert needle in exprs, needle
    (heat_map,) = [p for p in _panels(dashboard) if "heat map" in p["title"].lower()]
    assert "rack" in heat_map["targets"][0]["legendFormat"]
    assert "device" in heat_map["targets"][0]["legendFormat"]


def test_links_open_existing_dashboards(dashboard: dict[str, Any]) -> None:
    """Data links of the form /d/<uid>/... point at a shipped dashboard."""
    uids = {_load(path)["uid"] for path in DASHBOARDS}
    text = json.dumps(dashboard)
    for uid in re.findall(r"/d/([\w-]+)/", text):
        assert uid in uids


def test_provisioning() -> None:
    """A Prometheus data source with a fixed uid, and a file provider for the dashboards."""
    sources = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    (source,) = sources
    assert source["type"] == "prometheus"
    assert source["uid"] == "prometheus"
    assert source["url"].startswith("http")
    (provider,) = load_yaml(PROVISIONING / "dashboards" / "hwpoller.yml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


def _panel(dashboard: dict[str, Any], title: str, kind: str | None = None) -> dict[str, Any]:
    (panel,) = [p for p in _panels(dashboard) if p["title"] == title and kind in (None, p["type"])]
    return panel


def _expr_tests(
    tmp_path: Path, cases: list[tuple[str, list[str], list[tuple[str, float]]]]
) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` with one promql_expr_test per case: (expr, input series (each
    with the value 1 for 3 minutes, or `series=value`), expected (labels, value) at 2m)."""
    (tmp_path / "none.yml").write_text("groups: []\n")
    tests = []
    for expr, series, expected in cases:
        inputs = []
        for line in series:
            name, _, value = (
                line.rpartition("=") if line.endswith(("=0", "=1")) else (line, "", "1")
            )
            inputs.append({"series": name, "values": f"{value}x3"})
        tests.append(
            {
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": "2m",
                        "exp_samples": [{"labels": lbl, "value": v} for lbl, v in expected],
                    }
                ],
            }
        )
    path = tmp_path / "panels_test.yml"
    path.write_text(yaml.safe_dump({"rule_files": ["none.yml"], "tests": tests}))
    return run([tool("promtool"), "test", "rules", str(path)], cwd=tmp_path)


def test_room_stats_say_no_data_rather_than_a_green_zero(tmp_path: Path) -> None:
    """Counting stats return 0 when the room reports and nothing is wrong, the count when
    something is, and nothing at all (shown as "no data", not a green 0) without data."""
    dashboard = _load(REPO / "grafana" / "dashboards" / "room-overview.json")
    stats = [p for p in _panels(dashboard) if p["type"] == "stat"]
    assert len(stats) == 6
    for panel in stats:
        assert "vector(" not in panel["targets"][0]["expr"], panel["title"]
        assert panel["fieldConfig"]["defaults"]["noValue"] == "no data", panel["title"]
        (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
        assert mapping["options"]["match"] == "null+nan"
        assert mapping["options"]["result"]["color"] != "green"
    at = 'site="x", room="x", device="d"'
    other = [f'hw_temperature_celsius{{{at}, sensor="t", location="inlet"}}']
    inputs = {
        "Water leaks": [f'hw_leak_detected{{{at}, sensor="rope", location="floor"}}'],
        "Failed fans": [f'hw_status{{{at}, sensor="Fan1", hw_type="fan", state="failed"}}'],
        "UPS on battery": [f'hw_ups_power_source{{{at}, source="battery"}}'],
        "Devices down": [f'hwpoller_up{{{at}, protocol="snmp"}}'],
    }
    cases = []
    for title, (series,) in inputs.items():
        expr = _substitute(_panel(dashboard, title, "stat")["targets"][0]["expr"])
        bad = series if title != "Devices down" else series + "=0"
        good = series + "=0" if title != "Devices down" else series
        cases += [
            (expr, [bad, *other], [("{}", 1)]),
            (expr, [good, *other], [("{}", 0)]),
            (expr, other, []),  # no such sensor at all: no data
        ]
    result = _expr_tests(tmp_path, cases)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_table_shows_alerts_without_a_site(tmp_path: Path) -> None:
    """HwpollerDown carries no site label (the poller is not scraped): the firing-alerts table
    shows it beside the selected site's alerts, but not other sites' or the watchdog."""
    dashboard = _load(REPO / "grafana" / "dashboards" / "room-overview.json")
    expr = _substitute(_panel(dashboard, "Firing alerts")["targets"][0]["expr"])
    firing = 'alertstate="firing", severity="critical"'
    down = f'ALERTS{{alertname="HwpollerDown", {firing}}}'
    leak = f'ALERTS{{alertname="WaterLeakDetected", {firing}, site="x", room="x"}}'
    elsewhere = f'ALERTS{{alertname="WaterLeakDetected", {firing}, site="y", room="x"}}'
    watchdog = 'ALERTS{alertname="HwpollerWatchdog", alertstate="firing", severity="none"}'
    result = _expr_tests(
        tmp_path, [(expr, [down, leak, elsewhere, watchdog], [(down, 1), (leak, 1)])]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rack_view() -> None:
    """A rack variable (after room, from the targets' labels), a table with one row per rack,
    and a panel repeated per rack showing its devices' inlets, leaks and answers."""
    dashboard = _load(REPO / "grafana" / "dashboards" / "room-overview.json")
    variables = [v["name"] for v in dashboard["templating"]["list"]]
    assert variables.index("rack") == variables.index("room") + 1
    (rack,) = [v for v in dashboard["templating"]["list"] if v["name"] == "rack"]
    match = _LABEL_VALUES.fullmatch(_variable_query(rack))
    assert match and match.group(2) == "rack" and "$room" in match.group(1)
    assert rack["includeAll"] and rack["multi"]
    repeated = [p for p in _panels(dashboard) if p.get("repeat") == "rack"]
    assert len(repeated) == 1
    (panel,) = repeated
    assert "$rack" in panel["title"]
    exprs = [t["expr"] for t in panel["targets"]]
    assert all('rack=~"$rack"' in e for e in exprs)
    assert any('location="inlet"' in e for e in exprs)
    assert any("hw_leak_detected" in e for e in exprs)
    assert any("hwpoller_up" in e for e in exprs)
    table = _panel(dashboard, "Racks now")
    assert table["type"] == "table"
    assert all("by (site, room, rack)" in t["expr"] or "site_room_rack:" in t["expr"]
               for t in table["targets"])  # fmt: skip
    assert table["transformations"][0]["id"] == "merge"
