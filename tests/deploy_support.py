"""Helpers for the deploy and dashboard tests: repository paths, peer tools, PromQL names."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from poller.model import HwType, LimitType, Location, PowerSource, State

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))

# The public metrics of DESIGN.md ("Metrics (public interface)"): rules and dashboards may
# use these and the recording rules defined in deploy/prometheus, nothing else.
PUBLIC_METRICS = frozenset(
    {
        "hw_temperature_celsius",
        "hw_temperature_limit_celsius",
        "hw_humidity_ratio",
        "hw_humidity_limit_ratio",
        "hw_leak_detected",
        "hw_fan_speed_rpm",
        "hw_fan_speed_limit_rpm",
        "hw_status",
        "hw_battery_charge_ratio",
        "hw_battery_time_left_seconds",
        "hw_ups_power_source",
        "hw_ups_load_ratio",
        "hw_voltage_volts",
        "hw_power_watts",
        "hw_device_info",
        "hwpoller_up",
        "hwpoller_poll_duration_seconds",
        "hwpoller_last_success_timestamp_seconds",
        "hwpoller_poll_errors_total",
        "hwpoller_build_info",
    }
)
# Series Prometheus writes itself: scrape health (HwpollerDown) and firing alerts (dashboards).
PROMETHEUS_SERIES = frozenset({"up", "ALERTS"})

# Labels whose values are a closed set in the model; a typo in a matcher matches nothing.
KNOWN_LABEL_VALUES: Mapping[str, frozenset[str]] = {
    "location": frozenset(v.value for v in Location),
    "hw_type": frozenset(v.value for v in HwType),
    "state": frozenset(v.value for v in State),
    "source": frozenset(v.value for v in PowerSource),
    "limit_type": frozenset(v.value for v in LimitType),
    "reason": frozenset({"timeout", "unreachable", "auth", "protocol", "unsupported", "internal"}),
}

# Where each peer program comes from, for the message when it is missing.
_PACKAGES = {"promtool": "prometheus", "amtool": "prometheus-alertmanager"}


def tool(program: str) -> str:
    """Path of a peer program; fail (never skip) with an install hint when it is missing."""
    path = shutil.which(program)
    if path is None:
        package = _PACKAGES.get(program, program)
        raise AssertionError(
            f"{program} is not installed: install the Debian package {package} "
            f"(`make test` does this with apt-get when run as root)"
        )
    return path


def run(argv: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run a peer program and capture its output as text."""
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, timeout=120)


def load_yaml(path: Path) -> Any:
    """Parse one YAML document."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> Iterator[dict[str, Any]]:
    """Every rule (alerting and recording) of the shipped rule files."""
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            yield from group["rules"]


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules, in file order."""
    return [rule for rule in rules() if "alert" in rule]


def recorded_metrics() -> frozenset[str]:
    """Names the recording rules define."""
    return frozenset(rule["record"] for rule in rules() if "record" in rule)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# A whole identifier (not part of a number or a longer name) that is not a function call.
_NAME = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
# Binary operators, modifiers and the special float values: everything else bare is a name.
_OPERATORS = ("and", "or", "unless", "bool", "offset", "inf", "nan", "atan2")
_MODIFIERS = ("by", "without", "on", "ignoring", "group_left", "group_right")
_KEYWORDS = frozenset(_OPERATORS + _MODIFIERS)
_MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects, found by removing everything else."""
    if "__name__" in expr:
        raise ValueError(f"select metrics by name, not with __name__ matchers: {expr}")
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    return {m for m in _NAME.findall(text) if m not in _KEYWORDS}


def unknown_label_values(expr: str) -> list[str]:
    """Matchers on closed-set labels whose value (or a regex alternative) matches nothing."""
    problems = []
    for block in _MATCHERS.findall(expr):
        for label, op, value in _MATCHER.findall(block):
            allowed = KNOWN_LABEL_VALUES.get(label)
            if allowed is None or "$" in value:
                continue
            if op in ("=", "!="):
                ok = value in allowed
            else:
                ok = all(any(re.fullmatch(alt, v) for v in allowed) for alt in value.split("|"))
            if not ok:
                problems.append(f'{label}{op}"{value}" in {expr!r}')
    return problems


def promtool_check_exprs(
    exprs: Mapping[str, str], workdir: Path
) -> subprocess.CompletedProcess[str]:
    """Run `promtool check rules` on a rule file recording each expression under its key."""
    rule_list = [{"record": name, "expr": expr} for name, expr in exprs.items()]
    path = workdir / "exprs.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "checked-exprs", "rules": rule_list}]}),
        encoding="utf-8",
    )
    return run([tool("promtool"), "check", "rules", str(path)])
