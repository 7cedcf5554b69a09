"""Grafana dashboards and provisioning: structure, and every query checked by promtool."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_support import (
    DASHBOARDS,
    PROMETHEUS_SERIES,
    PUBLIC_METRICS,
    REPO,
    load_yaml,
    metric_names,
    promtool_check_exprs,
    recorded_metrics,
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
