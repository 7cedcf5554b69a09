"""The notification receiver's address index: each target's address is read with its own
protocol's parser, so a Redfish URL names its host and no target draws a false warning."""

from __future__ import annotations

import asyncio
import logging

import pytest

from poller.config import parse_config
from poller.simulator.snmpsim import free_udp_port
from poller.snmp.notifications import NotificationReceiver

CONFIG = """
settings:
  notification_address: 127.0.0.1:PORT
auths:
  snmp-c: {protocol: snmp, version: 2c, community: public}
  bmc: {protocol: ipmi, username: monitor, password: not-a-secret-here}
  rf: {protocol: redfish, username: monitor, password: not-a-secret-here, tls_insecure: true}
targets:
  - {name: ups-1, address: "127.0.0.2:1161", protocol: snmp, auth: snmp-c}
  - {name: bmc-1, address: 127.0.0.3, protocol: ipmi, auth: bmc}
  - {name: rf-url, address: "http://127.0.0.4:38155", protocol: redfish, auth: rf}
  - {name: rf-https, address: "https://127.0.0.5", protocol: redfish, auth: rf}
  - {name: rf-plain, address: "127.0.0.6:8443", protocol: redfish, auth: rf}
"""


class _NoScheduler:
    def runner(self, name: str) -> None:
        return None


def test_every_protocol_address_is_indexed_without_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = parse_config(CONFIG.replace("PORT", str(free_udp_port("127.0.0.1"))))
    receiver = NotificationReceiver(_NoScheduler())  # type: ignore[arg-type]

    async def scenario() -> dict[str, list[str]]:
        assert await receiver.start(config)
        try:
            return {
                ip: receiver._match(ip, port)
                for ip, port in [
                    ("127.0.0.2", 1161),
                    ("127.0.0.3", 623),
                    ("127.0.0.4", 38155),
                    ("127.0.0.5", 443),
                    ("127.0.0.6", 8443),
                ]
            }
        finally:
            receiver.stop()

    with caplog.at_level(logging.INFO, logger="hwpoller"):
        found = asyncio.run(scenario())
    assert found == {
        "127.0.0.2": ["ups-1"],
        "127.0.0.3": ["bmc-1"],
        "127.0.0.4": ["rf-url"],
        "127.0.0.5": ["rf-https"],
        "127.0.0.6": ["rf-plain"],
    }
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []
