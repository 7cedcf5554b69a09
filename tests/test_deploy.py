"""Deployment pack: Prometheus rules and config, Alertmanager, container, systemd, Kubernetes.

The rules and configs are checked by the real tools (promtool, amtool), and the files that no
tool here can run (Dockerfile, compose, Kubernetes) are checked for fitting together.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy_support import (
    ALERTMANAGER_CONFIG,
    PROMETHEUS_DIR,
    PROMETHEUS_SERIES,
    PUBLIC_METRICS,
    REPO,
    RULE_FILES,
    RULE_TESTS,
    alert_rules,
    load_yaml,
    metric_names,
    recorded_metrics,
    rules,
    run,
    tool,
    unknown_label_values,
)

pytestmark = pytest.mark.integration

# The heartbeat has no quiet state by design.
ALWAYS_FIRING = {"HwpollerWatchdog"}


def _rule_tests() -> list[dict[str, Any]]:
    """Every test case of every promtool unit-test file."""
    return [case for path in RULE_TESTS for case in load_yaml(path)["tests"]]


# --- Prometheus ---------------------------------------------------------------------------


def test_promtool_accepts_prometheus_config() -> None:
    """promtool resolves rule_files relative to prometheus.yml and checks them too."""
    result = run([tool("promtool"), "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    for path in RULE_FILES:
        assert path.name in result.stdout, f"prometheus.yml does not load {path.name}"


def test_prometheus_config_scrapes_hwpoller() -> None:
    """Job hwpoller at hwpoller:9730 every 5s, the shipped rules, and an Alertmanager."""
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["hwpoller"]
    assert job["scrape_interval"] == "5s"  # issue 12: alerts within seconds
    assert [t for sc in job["static_configs"] for t in sc["targets"]] == ["hwpoller:9730"]
    loaded = {(PROMETHEUS_DIR / name).resolve() for name in config["rule_files"]}
    assert loaded == {path.resolve() for path in RULE_FILES}
    managers = config["alerting"]["alertmanagers"]
    assert [t for m in managers for sc in m["static_configs"] for t in sc["targets"]]


def test_promtool_accepts_rules() -> None:
    """Every rule file parses and its expressions are valid PromQL."""
    result = run([tool("promtool"), "check", "rules", *map(str, RULE_FILES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    """The rules' unit tests (deploy/prometheus/tests) pass under promtool."""
    assert RULE_TESTS, "no promtool unit tests found"
    result = run([tool("promtool"), "test", "rules", *map(str, RULE_TESTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """A wrong expectation makes promtool fail, so the passing run above means something."""
    case = {
        "interval": "30s",
        "input_series": [{"series": 'hw_leak_detected{device="env-1"}', "values": "1x10"}],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": "WaterLeakDetected", "exp_alerts": []}
        ],
    }
    path = tmp_path / "wrong_test.yml"
    rule_files = [str(p) for p in RULE_FILES]
    path.write_text(yaml.safe_dump({"rule_files": rule_files, "tests": [case]}), encoding="utf-8")
    result = run([tool("promtool"), "test", "rules", str(path)])
    assert result.returncode != 0
    assert "WaterLeakDetected" in result.stdout + result.stderr


def test_every_alert_fires_and_stays_quiet_in_unit_tests() -> None:
    """Each alert/severity pair fires in some unit test, and each alert is tested quiet too."""
    fired: set[tuple[str, str]] = set()
    quiet: set[str] = set()
    for case in _rule_tests():
        for check in case.get("alert_rule_test", []):
            expected = check.get("exp_alerts") or []
            if not expected:
                quiet.add(check["alertname"])
            for alert in expected:
                fired.add((check["alertname"], alert["exp_labels"]["severity"]))
                assert alert.get("exp_annotations"), f"{check['alertname']}: no annotations"
    wanted = {(rule["alert"], rule["labels"]["severity"]) for rule in alert_rules()}
    assert wanted - fired == set(), "alerts never seen firing in a unit test"
    names = {rule["alert"] for rule in alert_rules()}
    assert names - quiet - ALWAYS_FIRING == set(), "alerts never tested quiet on normal input"


def test_every_recording_rule_is_unit_tested() -> None:
    """Each recording rule has expected samples in one test and none in another."""
    produced: set[str] = set()
    empty: set[str] = set()
    for case in _rule_tests():
        for check in case.get("promql_expr_test", []):
            (produced if check.get("exp_samples") else empty).add(check["expr"])
    assert recorded_metrics() - produced == set()
    assert recorded_metrics() - empty == set()


def test_alerts_have_severity_summary_and_runbook() -> None:
    """Severity labels, a summary and a description that points at its runbook section."""
    for rule in alert_rules():
        name = rule["alert"]
        severity = rule["labels"]["severity"]
        assert severity in ({"none"} if name in ALWAYS_FIRING else {"warning", "critical"}), name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert annotations["description"].rstrip().endswith(f"docs/alerts.md#{name.lower()}"), name


def test_every_alert_has_a_runbook_section() -> None:
    """docs/alerts.md has a heading for every alert (the anchor the descriptions link to)."""
    headings = set(re.findall(r"^#+ (\w+)\s*$", (REPO / "docs" / "alerts.md").read_text(), re.M))
    missing = {rule["alert"] for rule in alert_rules()} - headings
    assert missing == set(), f"docs/alerts.md has no section for {sorted(missing)}"


def test_alert_labels_keep_device_location() -> None:
    """No device alert aggregates away site/room/rack/device (routing and inhibition need them)."""
    for rule in alert_rules():
        expr = rule["expr"]
        uses_device_series = any(m.startswith(("hw_", "hwpoller_")) for m in metric_names(expr))
        if uses_device_series:
            assert not re.search(r"\b(sum|avg|min|max|count|quantile)\s*(by|\()", expr), rule[
                "alert"
            ]


def test_rules_use_only_public_metrics() -> None:
    """Rules select DESIGN.md's public metrics, recorded series, or Prometheus' own `up`."""
    allowed = PUBLIC_METRICS | recorded_metrics() | PROMETHEUS_SERIES
    for rule in rules():
        unknown = metric_names(rule["expr"]) - allowed
        assert unknown == set(), f"{rule.get('alert') or rule.get('record')}: {sorted(unknown)}"


def test_rules_match_only_known_label_values() -> None:
    """location/hw_type/state/source/limit_type matchers use values the model can export."""
    for rule in rules():
        assert unknown_label_values(rule["expr"]) == []


def test_metric_name_check_finds_names_and_unknowns() -> None:
    """The name extraction behind the checks above sees through functions and matchers."""
    expr = (
        'sum by (room) (rate(hwpoller_poll_errors_total{reason="auth"}[5m])) * 1e3 '
        "and on (device) hw_status offset 5m or vector(1) unless ignoring (x) hw_bogus_metric"
    )
    assert metric_names(expr) == {"hwpoller_poll_errors_total", "hw_status", "hw_bogus_metric"}
    assert unknown_label_values('hw_temperature_celsius{location="inlett"}')
    assert unknown_label_values('hw_status{hw_type=~"fan|colling"}')
    assert not unknown_label_values('hw_temperature_limit_celsius{limit_type=~"high.*"}')


# --- Alertmanager -------------------------------------------------------------------------


def test_amtool_accepts_alertmanager_config() -> None:
    """The example Alertmanager config passes amtool's own check."""
    result = run([tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["alertname=HwpollerWatchdog", "severity=none"], "deadmans-switch"),
        (
            [
                "alertname=WaterLeakDetected",
                "severity=critical",
                "site=bontang",
                "room=server-room",
            ],
            "ticketing-webhook,oncall-telegram,bontang-server-room-email",
        ),
        (
            ["alertname=UpsOnBattery", "severity=critical", "site=other", "room=hall-2"],
            "ticketing-webhook,oncall-telegram,ops-email",
        ),
        (
            ["alertname=FanFailed", "severity=warning", "site=other", "room=hall-2"],
            "ticketing-webhook,ops-email",
        ),
    ],
)
def test_alertmanager_routes_by_severity_and_room(labels: list[str], receivers: str) -> None:
    """Watchdog to the dead man's switch; critical to the chat; rooms to their own staff."""
    result = run(
        [
            tool("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_CONFIG}",
            f"--verify.receivers={receivers}",
            *labels,
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_unreachable_device_inhibits_all_its_sensor_alerts() -> None:
    """Every alert on a device's readings is a target of the DeviceUnreachable inhibition."""
    config = load_yaml(ALERTMANAGER_CONFIG)
    (rule,) = [
        r
        for r in config["inhibit_rules"]
        if 'alertname="DeviceUnreachable"' in r["source_matchers"]
    ]
    (target,) = rule["target_matchers"]
    match = re.fullmatch(r'alertname=~"(.+)"', target)
    assert match, target
    assert "device" in rule["equal"]
    per_device = {
        r["alert"]
        for r in alert_rules()
        if any(m.startswith("hw_") for m in metric_names(r["expr"]))
        or "hwpoller_last_success_timestamp_seconds" in metric_names(r["expr"])
    }
    inhibited = {name for name in per_device if re.fullmatch(match.group(1), name)}
    assert per_device - inhibited == set()
    assert not re.fullmatch(match.group(1), "DeviceUnreachable")


def test_critical_inhibits_warning_of_the_same_alert() -> None:
    """A firing critical suppresses the warning of the same alert, device and sensor."""
    config = load_yaml(ALERTMANAGER_CONFIG)
    assert any(
        r["source_matchers"] == ['severity="critical"']
        and r["target_matchers"] == ['severity="warning"']
        and {"alertname", "device"} <= set(r["equal"])
        for r in config["inhibit_rules"]
    )


def test_a_lost_feed_pages_once() -> None:
    """PowerFeedLost inhibits ComponentFailed on the same device's power supplies (a lost
    feed fails the supply's input status too)."""
    config = load_yaml(ALERTMANAGER_CONFIG)
    assert any(
        r["source_matchers"] == ['alertname="PowerFeedLost"']
        and 'alertname="ComponentFailed"' in r["target_matchers"]
        and 'hw_type="power_supply"' in r["target_matchers"]
        and {"site", "room", "device"} <= set(r["equal"])
        for r in config["inhibit_rules"]
    )


def test_alertmanager_config_holds_no_secret() -> None:
    """Secrets come from files; the only inline one (Telegram on 0.25) is a placeholder."""
    secret_keys = {"smtp_auth_password", "auth_password", "bot_token", "credentials", "password"}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in secret_keys:
                    assert str(value).startswith("REPLACE"), f"{path}.{key} holds a value"
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    walk(load_yaml(ALERTMANAGER_CONFIG), "")


# --- Container, compose, systemd, Kubernetes ----------------------------------------------


def test_dockerfile() -> None:
    """python:3.11-slim, pip install ., non-root, port 9730, hwpoller run entrypoint."""
    text = (REPO / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"pip install\b", text)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user, "no USER: the image would run as root"
    assert user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^EXPOSE 9730$", text, re.M)
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    assert entrypoint
    expected = ["hwpoller", "run", "--config.file", "/etc/hwpoller/hwpoller.yml"]
    assert yaml.safe_load(entrypoint.group(1)) == expected
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for name in source.split():
            if name != "README.md":  # written alongside; pip needs it for the metadata
                assert (REPO / name).exists(), f"COPY {name}: no such file in the repository"


def test_compose_stack_fits_together() -> None:
    """Services, mounts and names agree with prometheus.yml and the Grafana provisioning."""
    compose_dir = REPO / "deploy" / "compose"
    compose = load_yaml(compose_dir / "compose.yml")
    services = compose["services"]
    assert {"simulator", "hwpoller", "prometheus", "alertmanager", "grafana"} <= set(services)
    build = services["hwpoller"]["build"]
    assert (compose_dir / build["context"] / build["dockerfile"]).is_file()
    assert services["simulator"]["entrypoint"][:2] == ["hwpoller", "simulate"]
    assert services["hwpoller"]["depends_on"]["simulator"]["condition"] == "service_healthy"
    # The simulator writes the config into the volume hwpoller reads /etc/hwpoller from.
    sim_volume, sim_dir = services["simulator"]["volumes"][0].split(":")[:2]
    hw_volume, hw_dir = services["hwpoller"]["volumes"][0].split(":")[:2]
    assert sim_volume == hw_volume
    assert hw_dir == "/etc/hwpoller"
    assert any(f"={sim_dir}/hwpoller.yml" in arg for arg in services["simulator"]["command"])
    # Bind mounts point at files of this repository.
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (compose_dir / source).exists(), f"{name}: {source} does not exist"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    # Prometheus scrapes the hwpoller service by its compose name.
    prometheus = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    (job,) = [job for job in prometheus["scrape_configs"] if job["job_name"] == "hwpoller"]
    for target in job["static_configs"][0]["targets"]:
        assert target.split(":")[0] in services
    # Grafana finds the dashboards where the provisioning file says they are.
    mounts = {}
    for volume in services["grafana"]["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = source
    provider = load_yaml(REPO / "grafana" / "provisioning" / "dashboards" / "hwpoller.yml")
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert (compose_dir / mounts[dashboards_path]).resolve() == (REPO / "grafana" / "dashboards")
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (REPO / "grafana" / "dashboards" / Path(home).relative_to(dashboards_path)).is_file()


def _unit_directives(text: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            directives.setdefault(key, []).append(value)
    return directives


def test_systemd_unit_is_hardened() -> None:
    """Runs `hwpoller run` unprivileged and sandboxed; reload sends SIGHUP."""
    unit = _unit_directives((REPO / "deploy" / "systemd" / "hwpoller.service").read_text())
    (start,) = unit["ExecStart"]
    assert re.search(r"/hwpoller run --config\.file \S+", start)
    assert any(re.fullmatch(r"/bin/kill -HUP \$MAINPID", v) for v in unit["ExecReload"])
    assert unit.get("DynamicUser") == ["yes"] or unit.get("User") not in (None, ["root"])
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictSUIDSGID": "yes",
        "Restart": "on-failure",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], f"{key}={unit.get(key)}"


def _kubernetes() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted((REPO / "deploy" / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            docs[doc["kind"]] = doc
    return docs


def test_kubernetes_manifests_fit_together() -> None:
    """Names, labels, ports, secret keys and env vars agree across the manifests."""
    k8s = _kubernetes()
    listed = set(k8s["Kustomization"]["resources"])
    assert listed == {p.name for p in (REPO / "deploy" / "kubernetes").glob("*.yaml")} - {
        "kustomization.yaml"
    }
    deployment, service, monitor = k8s["Deployment"], k8s["Service"], k8s["ServiceMonitor"]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] == 1
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"name": "metrics", "containerPort": 9730, "protocol": "TCP"} in container["ports"]
    (port,) = service["spec"]["ports"]
    assert port["port"] == 9730
    assert port["targetPort"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["port"] == port["name"]
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9730"
    # Secret keys and ${VAR}s line up.
    secret = k8s["Secret"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    for ref in env.values():
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]
    config_text = k8s["ConfigMap"]["data"]["hwpoller.yml"]
    assert set(re.findall(r"\$\{(\w+)\}", config_text)) == set(env)
    (volume,) = pod["spec"]["volumes"]
    assert volume["configMap"]["name"] == k8s["ConfigMap"]["metadata"]["name"]
    assert container["volumeMounts"][0]["mountPath"] == "/etc/hwpoller"


def test_kubernetes_config_passes_check_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ConfigMap's hwpoller.yml is a valid config once the Secret's env vars are set."""
    from poller.cli import main

    k8s = _kubernetes()
    container = k8s["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    for item in container["env"]:
        monkeypatch.setenv(
            item["name"], k8s["Secret"]["stringData"][item["valueFrom"]["secretKeyRef"]["key"]]
        )
    path = tmp_path / "hwpoller.yml"
    path.write_text(k8s["ConfigMap"]["data"]["hwpoller.yml"], encoding="utf-8")
    assert main(["check-config", str(path)]) == 0, capsys.readouterr().err
