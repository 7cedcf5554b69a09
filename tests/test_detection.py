"""Auto-selection: every shipped recording is recognised without `profile:`, and a device no
profile knows is reported as unsupported with a clear message."""

from __future__ import annotations

import asyncio

import pytest

from poller.simulator.snmpsim import RECORDINGS, SnmpSim
from tests.util import poll_once, snmp_config

pytestmark = pytest.mark.integration

# recording (community) -> the profile it must select, and how it is recognised.
EXPECTED = {
    "akcp-sensorprobe": "akcp-sensorprobe",  # sysObjectID 3854.1
    "apc-emu": "apc-emu",  # sysObjectID 318.1.3.8.4
    "apc-inrow-dx": "apc-cooling",  # sysObjectID 318.1.3.14.23
    "apc-netbotz-powernet": "apc-netbotz-powernet",  # 318.1.3.8.5: longer than apc-emu's prefix
    "apc-smartups": "apc-ups",  # sysObjectID 318.1.3.27
    "apc-smartups-uio": "apc-ups",
    "dell-idrac": "dell-idrac",  # sysObjectID 674.10892.5
    "eaton-9px-emp": "eaton-xups",  # 534 prefix + XUPS-MIB subtree; RFC 1628 applies beside
    "entity-sensor": "entity-sensor",  # unknown sysObjectID; ENTITY-MIB answers (fallback)
    "geist-watchdog": "geist-watchdog",  # sysObjectID 21239.5.1
    "hpe-ilo": "hpe-ilo",  # sysObjectID 232.9.4.10
    "liebert-crac": "liebert-gp-env",  # sysObjectID 476.1.42 exactly
    "liebert-crac-leak": "liebert-gp-env",
    "netbotz": "netbotz",  # sysObjectID 5528.100.20.10.2013
    "rfc1628-ups": "rfc1628-ups",  # net-snmp sysObjectID; the upsObjects subtree answers
}


def test_every_recording_has_an_expectation() -> None:
    recordings = {p.stem for p in RECORDINGS.glob("*.snmprec")}
    assert recordings == set(EXPECTED), "add the new recording to EXPECTED"


@pytest.mark.parametrize(("community", "profile"), sorted(EXPECTED.items()))
def test_recording_selects_its_profile(snmpsim: SnmpSim, community: str, profile: str) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, community)))
    assert result.success, f"{result.reason}: {result.message}"
    assert result.data is not None
    assert result.data.info.profile == profile
    assert result.data.readings, "a detected device must produce readings"
    assert not result.data.partial_errors


def test_unknown_device_is_unsupported(snmpsim: SnmpSim) -> None:
    result = asyncio.run(poll_once(snmp_config(snmpsim.port, "unknown-device")))
    assert not result.success
    assert result.reason == "unsupported"
    assert "no profile matches sysObjectID 1.3.6.1.4.1.424242.1.8" in result.message
    assert "Acme KVM Switch" in result.message  # the sysDescr helps the operator


def test_explicit_profile_overrides_detection(snmpsim: SnmpSim) -> None:
    # The Eaton card also speaks RFC 1628: a target can ask for that profile explicitly.
    config = snmp_config(snmpsim.port, "eaton-9px-emp", profile="rfc1628-ups")
    result = asyncio.run(poll_once(config))
    assert result.success and result.data is not None
    assert result.data.info.profile == "rfc1628-ups"
    assert result.data.info.vendor == "EATON"
