"""docs/metrics.md's notification receiver table lists exactly what the receiver emits."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from poller.snmp.notifications import REJECTS, RESULTS, NotificationCounters
from tests.util import promtool_check_metrics

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


def documented() -> dict[str, tuple[set[str], str]]:
    """{metric: (labels, meaning)} of the rows under "Notification receiver metrics"."""
    section = DOC.read_text().split("## Notification receiver metrics", 1)[1].split("\n## ")[0]
    rows = re.findall(r"^\| `([a-z_]+)` \|([a-z_, ]*)\| (.+) \|$", section, re.M)
    return {n: ({x.strip() for x in lbl.split(",") if x.strip()}, text) for n, lbl, text in rows}


def emitted(counters: NotificationCounters) -> dict[str, set[str]]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(counters)
    text = generate_latest(registry).decode()
    promtool_check_metrics(text)
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "counter", family.name
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                out.setdefault(sample.name, set()).update(sample.labels)
    return out


def test_doc_matches_the_receivers_metrics() -> None:
    counters = NotificationCounters()
    assert emitted(counters) == {}  # nothing while the receiver does not run
    counters.enabled = True
    counters.known(["ups-1", "bmc-1"])
    counters.device("ups-1", "polled")
    counters.reject("flood", 3)
    doc = documented()
    assert {name: labels for name, (labels, _) in doc.items()} == emitted(counters)
    # Every result and reason the code can count is explained.
    meaning = " ".join(text for _, text in doc.values())
    for word in (*RESULTS, *REJECTS):
        assert f"`{word}`" in meaning, word


def test_every_target_and_reason_is_exported_from_start() -> None:
    counters = NotificationCounters()
    counters.enabled = True
    counters.known(["ups-1"])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(counters)
    text = generate_latest(registry).decode()
    for result in RESULTS:
        assert f'hwpoller_notifications_total{{device="ups-1",result="{result}"}} 0.0' in text
    for reason in REJECTS:
        assert f'hwpoller_notifications_rejected_total{{reason="{reason}"}} 0.0' in text
    counters.known([])  # a target removed by a reload loses its series
    assert 'device="ups-1"' not in generate_latest(registry).decode()
