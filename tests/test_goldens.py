"""Every shipped SNMP profile: its fixture polled through snmpsim renders exactly the committed
golden exposition, which promtool accepts. UPDATE_GOLDEN=1 rewrites the files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from poller.simulator.snmpsim import SnmpSim
from tests.util import (
    check_golden,
    golden_exposition,
    poll_once,
    promtool_check_metrics,
    snmp_config,
)

pytestmark = pytest.mark.integration

# (recording = community, target name, golden file)
CASES = [
    ("apc-smartups", "apc-ups-1", "apc-ups"),
    ("rfc1628-ups", "rfc1628-ups-1", "rfc1628-ups"),
    ("apc-emu", "apc-emu-1", "apc-emu"),
    ("apc-netbotz-powernet", "apc-netbotz-powernet-1", "apc-netbotz-powernet"),
    ("apc-inrow-dx", "apc-cooling-1", "apc-cooling"),
    ("netbotz", "netbotz-1", "netbotz"),
    ("liebert-crac-leak", "liebert-gp-env-1", "liebert-gp-env"),
    ("liebert-crac", "liebert-gp-env-clear-1", "liebert-gp-env-clear"),
    ("akcp-sensorprobe", "akcp-sensorprobe-1", "akcp-sensorprobe"),
    ("eaton-9px-emp", "eaton-1", "eaton-xups"),
    ("geist-watchdog", "geist-1", "geist-watchdog"),
    ("entity-sensor", "pdu-1", "entity-sensor"),
    ("dell-idrac", "dell-idrac-1", "dell-idrac"),
    ("hpe-ilo", "hpe-ilo-1", "hpe-ilo"),
]
# Every other fixture in tests/fixtures/snmprec/ is a case of its own: recording NAME, target
# NAME-1, golden NAME.prom, polled with no profile given (detection is part of what is tested);
# unknown-* recordings are devices no profile supports (tests/test_detection.py).
_FIXTURES = Path(__file__).parent / "fixtures" / "snmprec"
_LISTED = {c[0] for c in CASES}
CASES += [
    (f.stem, f"{f.stem}-1", f.stem)
    for f in sorted(_FIXTURES.glob("*.snmprec"))
    if f.stem not in _LISTED and not f.stem.startswith("unknown-")
]


@pytest.mark.parametrize(("community", "name", "golden"), CASES, ids=[c[2] for c in CASES])
def test_golden_exposition(snmpsim: SnmpSim, community: str, name: str, golden: str) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, community, name=name)))
    text = golden_exposition(result)
    promtool_check_metrics(text)
    series = [line.rpartition(" ")[0] for line in text.splitlines() if not line.startswith("#")]
    assert len(series) == len(set(series)), "duplicate series in the exposition"
    check_golden(golden, text)
