"""The cluster rules and Prometheus config (deploy/prometheus/cluster) under the real tools."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.deploy_support import REPO, run, tool

pytestmark = pytest.mark.integration

CLUSTER = REPO / "deploy" / "prometheus" / "cluster"
RULES = CLUSTER / "rules.yml"
TESTS = CLUSTER / "rules_test.yml"


def _alerts() -> list[dict[str, object]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_accepts_cluster_rules_and_config() -> None:
    result = run([tool("promtool"), "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    result = run([tool("promtool"), "check", "config", str(CLUSTER / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_cluster_rule_tests_pass() -> None:
    """Including the shipped device alerts while a device moves between members."""
    result = run([tool("promtool"), "test", "rules", str(TESTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_cluster_alert_fires_and_stays_quiet_and_has_a_runbook() -> None:
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    fired, quiet = set(), set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {str(r["alert"]) for r in _alerts()}
    assert names - fired == set()
    assert names - quiet == set()
    headings = set(re.findall(r"^#+ (\w+)\s*$", (REPO / "docs" / "cluster.md").read_text(), re.M))
    for rule in _alerts():
        name = str(rule["alert"])
        assert name in headings, f"docs/cluster.md has no section {name}"
        description = rule["annotations"]["description"]  # type: ignore[index]
        assert description.rstrip().endswith(f"docs/cluster.md#{name.lower()}")


def test_relabelling_covers_every_device_health_metric() -> None:
    """Each hwpoller_* series about a device (docs/metrics.md's table) loses the member's
    instance; the notification counters stay per member (each member counts for every target)."""
    config = yaml.safe_load((CLUSTER / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    regex = job["metric_relabel_configs"][0]["regex"]
    documented = set(
        re.findall(
            r"^\| `(hwpoller_[a-z_]+)` \| (?:gauge|counter) \|",
            (REPO / "docs" / "metrics.md").read_text(),
            re.M,
        )
    )
    for name in documented - {"hwpoller_build_info"}:
        assert re.fullmatch(regex, name), name
    assert not re.fullmatch(regex, "hwpoller_cluster_owned_targets")
    assert not re.fullmatch(regex, "hwpoller_build_info")


def test_cluster_deploy_files_fit_together(tmp_path: Path) -> None:
    """The StatefulSet kustomization lists its files; compose has 3 etcd and 3 members."""
    k8s = REPO / "deploy" / "kubernetes" / "statefulset"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    local = {r for r in kustomization["resources"] if not r.startswith("../")}
    assert local == {p.name for p in k8s.glob("*.yaml")} - {"kustomization.yaml"}
    assert all((k8s / r).is_file() for r in kustomization["resources"])
    docs = {}
    for path in k8s.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            docs.setdefault(doc["kind"], []).append(doc)
    (sts,) = docs["StatefulSet"]
    pod = sts["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    config_text = next(d for d in docs["ConfigMap"])["data"]["hwpoller.yml"]
    assert "member: ${POD_NAME}" in config_text
    headless = [s for s in docs["Service"] if s["spec"].get("clusterIP") == "None"]
    assert headless and headless[0]["metadata"]["name"] == sts["spec"]["serviceName"]
    compose = yaml.safe_load((REPO / "deploy" / "compose" / "compose-cluster.yml").read_text())
    services = compose["services"]
    assert {"etcd-1", "etcd-2", "etcd-3", "hwpoller-1", "hwpoller-2", "hwpoller-3"} <= set(services)
    prometheus = yaml.safe_load((CLUSTER / "prometheus.yml").read_text())
    for target in prometheus["scrape_configs"][0]["static_configs"][0]["targets"]:
        assert target.split(":")[0] in services


def test_statefulset_config_passes_check_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The StatefulSet's hwpoller.yml is valid once the pod's variables are set."""
    from poller.cli import main

    k8s = REPO / "deploy" / "kubernetes" / "statefulset"
    config = yaml.safe_load((k8s / "configmap.yaml").read_text())["data"]["hwpoller.yml"]
    monkeypatch.setenv("POD_NAME", "hwpoller-cluster-0")
    monkeypatch.setenv("UPS_COMMUNITY", "public")
    path = tmp_path / "hwpoller.yml"
    path.write_text(config)
    assert main(["check-config", str(path)]) == 0, capsys.readouterr().err
