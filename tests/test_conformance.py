"""hwpoller against LibreNMS on real recordings (tests/conformance.py does the work): every
recording is polled with no profile given; the score must stay at or above the bar, every
device must be recognised or say why not, and no exposition may carry a series twice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from poller.simulator.snmpsim import SnmpSim
from tests.conformance import CORPUS, DeviceScore, recordings, report, score_all, summary

pytestmark = pytest.mark.integration

# Share of LibreNMS's sensors (those not excepted in tests/conformance_exceptions/, each
# with its reason) that hwpoller must read with the same quantity and value.
MIN_MATCHED = 0.95
# Share of recordings at least one profile must recognise.
MIN_RECOGNISED = 0.85


@pytest.fixture(scope="module")
def scores() -> Iterator[list[DeviceScore]]:
    """Serve the whole corpus with one snmpsim and poll every recording once."""
    names = recordings(CORPUS)
    assert len(names) >= 80, f"the LibreNMS corpus is missing from {CORPUS}"
    sim = SnmpSim(data_dirs=[CORPUS])
    sim.start(timeout=120)
    try:
        yield asyncio.run(score_all(sim, names))
    finally:
        sim.stop()


def test_score_meets_the_bar(scores: list[DeviceScore]) -> None:
    totals = summary(scores)
    wanted = totals["matched"] + totals["missed"]
    print(report(scores))
    assert totals["matched"] >= MIN_MATCHED * wanted, report(scores, verbose=True)
    assert totals["recognised"] >= MIN_RECOGNISED * totals["devices"], report(scores)


def test_exceptions_stay_exceptional(scores: list[DeviceScore]) -> None:
    totals = summary(scores)
    # A guard against excepting misses away: at most 12 % of LibreNMS's sensors. (The largest
    # single rule is the InRow DX's 18 unscaled coolingUnit values.)
    assert totals["excepted"] <= 0.12 * totals["sensors"], report(scores, verbose=True)


def test_every_device_is_recognised_or_says_why(scores: list[DeviceScore]) -> None:
    for score in scores:
        result = score.result
        if result.success:
            continue
        assert result.reason == "unsupported", f"{score.name}: {result.reason}: {result.message}"
        assert "sysObjectID" in result.message and "answered" in result.message, result.message


def test_no_duplicate_series(scores: list[DeviceScore]) -> None:
    dupes = {s.name: s.duplicates for s in scores if s.duplicates}
    assert not dupes, dupes
