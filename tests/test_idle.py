"""An idle `hwpoller run` sleeps: no periodic timers in the receiver or the HTTP server.

One target at a 1 h interval, receiver and HTTP server on (issue 24). Before the fix the
process woke ~14-24 times a second (pysnmp's 0.1 s dispatcher timer, socketserver's poll
interval); now it wakes only for polls, scrapes and datagrams, none of which happen in the
window. The bound is on wake-ups (voluntary context switches of all threads), not on time,
and far above what is left (~0.1/s) so that a loaded machine does not make it flaky.
"""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest

from poller.simulator.replay import ReplayProcess
from poller.simulator.snmpsim import RECORDINGS
from tests.bench.bench_idle import idle_hwpoller, measure_idle

pytestmark = pytest.mark.integration

# Wake-ups per second allowed with nothing due (the old code: 14 or more).
MAX_WAKEUPS_PER_SECOND = 5.0
WINDOW = 10.0
MALFORMED = b'hwpoller_notifications_rejected_total{reason="malformed"} 1.0'


def _metrics(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body


def test_idle_run_does_not_wake_up() -> None:
    name = "apc-smartups"
    with (
        ReplayProcess([RECORDINGS / f"{name}.snmprec"]) as agent,
        idle_hwpoller(agent.port, name, receiver=True) as running,
    ):
        idle = measure_idle(running.proc.pid, WINDOW)
        assert idle.wakeups_per_second < MAX_WAKEUPS_PER_SECOND, idle
        # Still serving and receiving after the quiet window: a datagram on the notification
        # port is handled (pysnmp runs without its timer) and a scrape shows it.
        assert running.notification_port is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"not snmp", ("127.0.0.1", running.notification_port))
        deadline = time.monotonic() + 10
        while MALFORMED not in _metrics(running.http_port):
            assert time.monotonic() < deadline, "the datagram was not counted"
            time.sleep(0.1)
