"""hwpoller against LibreNMS on real recordings (tests/conformance.py does the work): every
recording is polled with no profile given; the score must stay at or above the bar, every
device must be recognised or say why not, and no exposition may carry a series twice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from poller.simulator.snmpsim import SnmpSim
from tests.conformance import (
    MAX_EXCEPTED,
    MIN_MATCHED,
    MIN_RECOGNISED,
    DeviceScore,
    corpus_dir,
    recordings,
    report,
    score_all,
    summary,
)

# The conformance lane (make conformance): it reads an external corpus, so `make test`
# deselects it (pyproject addopts) and .ci/run runs it wherever the corpus is present.
pytestmark = [pytest.mark.integration, pytest.mark.conformance]


@pytest.fixture(scope="module")
def scores() -> Iterator[list[DeviceScore]]:
    """Serve the whole corpus with one snmpsim and poll every recording once."""
    corpus = corpus_dir()
    names = recordings(corpus)
    assert len(names) >= 80, f"the LibreNMS corpus in {corpus} has only {len(names)} recordings"
    sim = SnmpSim(data_dirs=[corpus])
    sim.start(timeout=120)
    try:
        yield asyncio.run(score_all(sim, names, corpus))
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
    assert totals["excepted"] <= MAX_EXCEPTED * totals["sensors"], report(scores, verbose=True)


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
