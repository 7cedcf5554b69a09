"""The HTTP server's accepting thread sleeps while no client is connected (issue 24).

socketserver's serve_forever() woke every poll interval (0.25 s) to check deadlines; the
accepting thread now waits in select() until a connection, a deadline or stop(). Counted as
the thread's voluntary context switches, a bound on wake-ups rather than on time.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from poller import http
from poller.exporter import exposition
from poller.http import HttpServer
from poller.store import Store
from tests.test_run_e2e import free_tcp_port


def _switches(thread: threading.Thread) -> int:
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


def _http_thread() -> threading.Thread:
    return next(t for t in threading.enumerate() if t.name == "http")


def test_accepting_thread_sleeps_and_still_serves_and_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http, "HEADER_TIMEOUT", 1.5)
    server = HttpServer(f"127.0.0.1:{free_tcp_port()}", Store(), exposition)
    server.start()
    try:
        thread = _http_thread()
        time.sleep(0.2)
        before = _switches(thread)
        time.sleep(2.0)
        assert _switches(thread) - before <= 2  # the old poll loop: 8 in 2 s
        url = f"http://127.0.0.1:{server.port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.read() == b"ok\n"
        # A silent client holds a deadline: the thread wakes for it, not before.
        with socket.create_connection(("127.0.0.1", server.port)) as silent:
            time.sleep(0.5)
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200
            silent.settimeout(10)
            started = time.monotonic()
            assert silent.recv(100) == b""  # dropped at its header deadline
            assert time.monotonic() - started < 5
    finally:
        stopped = time.monotonic()
        server.stop()
    assert time.monotonic() - stopped < 2
    assert not thread.is_alive()
