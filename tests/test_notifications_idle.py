"""The notification receiver runs pysnmp without its dispatcher timer (issue 24)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import yaml

from poller.config import parse_config
from poller.simulator.snmpsim import free_udp_port
from poller.snmp.notifications import NotificationReceiver
from poller.store import Store


class _NoScheduler:
    def runner(self, _name: str) -> None:
        return None


def _config() -> Any:
    doc = {
        "settings": {"notification_address": f"127.0.0.1:{free_udp_port()}"},
        "auths": {"sim": {"protocol": "snmp", "version": "2c", "community": "public"}},
        "targets": [
            {"name": "ups", "address": "127.0.0.1:1161", "protocol": "snmp", "auth": "sim"}
        ],
    }
    return parse_config(yaml.safe_dump(doc), "<test>")


def test_receiver_schedules_no_timer_and_still_decodes() -> None:
    async def main() -> None:
        receiver = NotificationReceiver(_NoScheduler())  # type: ignore[arg-type]
        before = asyncio.all_tasks()
        assert await receiver.start(_config())
        try:
            await asyncio.sleep(0.3)
            # pysnmp's AsyncioDispatcher would be running handle_timeout() every 0.1 s.
            started = {repr(t.get_coro()) for t in asyncio.all_tasks() - before}
            assert not any("handle_timeout" in name for name in started), started
            assert receiver.address is not None
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"\x30\x03\x02\x01\x07", receiver.address)  # SNMP version 7
                await asyncio.sleep(0.3)
            text = receiver.exposition(Store())
            assert b'hwpoller_notifications_rejected_total{reason="malformed"} 1.0' in text
        finally:
            receiver.stop()

    asyncio.run(main())
