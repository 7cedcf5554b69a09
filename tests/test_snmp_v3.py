"""SNMPv3 authPriv (SHA-256 + AES) against a real net-snmp snmpd."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import yaml

from poller.config import parse_config
from tests.peers import V3_AUTH, V3_PRIV, V3_USER, Snmpd
from tests.util import poll_once, readings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def snmpd() -> Iterator[Snmpd]:
    with Snmpd() as agent:
        yield agent


def v3_config(port: int, **auth: str) -> object:
    creds = {
        "protocol": "snmp",
        "version": 3,
        "username": V3_USER,
        "security_level": "authPriv",
        "auth_protocol": "SHA256",
        "auth_password": V3_AUTH,
        "priv_protocol": "AES",
        "priv_password": V3_PRIV,
        **auth,
    }
    doc = {
        "auths": {"v3": creds},
        "targets": [
            {
                "name": "v3-ups",
                "address": f"127.0.0.1:{port}",
                "protocol": "snmp",
                "auth": "v3",
                "timeout": "3s",
                "retries": 0,
            }
        ],
    }
    return parse_config(yaml.safe_dump(doc))


def test_v3_authpriv_sha256_aes_polls_snmpd(snmpd: Snmpd) -> None:
    result = asyncio.run(poll_once(v3_config(snmpd.port)))  # type: ignore[arg-type]
    got = readings(result)
    assert result.data is not None
    assert result.data.info.profile == "rfc1628-ups"
    assert result.data.info.protocol == "snmpv3"
    assert result.data.info.vendor == "NetSNMP Test UPS"
    assert got[("battery_charge", "battery", "")] == pytest.approx(0.87)
    assert got[("battery_time_left", "battery", "")] == 12 * 60
    assert got[("ups_power_source", "output", "")] == "battery"


@pytest.mark.parametrize(
    "wrong",
    [
        {"auth_password": "not-the-auth-password"},
        {"priv_password": "not-the-priv-password"},
        {"username": "intruder"},
    ],
)
def test_v3_wrong_credentials_are_auth_errors(snmpd: Snmpd, wrong: dict[str, str]) -> None:
    result = asyncio.run(poll_once(v3_config(snmpd.port, **wrong)))  # type: ignore[arg-type]
    assert not result.success
    assert result.reason == "auth", result.message
    for secret in (V3_AUTH, V3_PRIV, *wrong.values()):
        if "password" in secret:
            assert secret not in result.message
