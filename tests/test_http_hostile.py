"""Hostile HTTP clients (issue 10): none of them may keep Prometheus from scraping."""

from __future__ import annotations

import base64
import logging
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import poller.http
from poller.exporter import exposition
from poller.http import HttpServer, WebConfig
from poller.store import Store
from tests.test_run_e2e import free_tcp_port
from tests.util import require

# Real sockets, threads and openssl; part of the fault suite (hostile peers).
pytestmark = [pytest.mark.integration, pytest.mark.fault]


@pytest.fixture
def store() -> Store:
    store = Store()
    store.register("ups-1", "snmp", {"site": "hq"})
    return store


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            require("openssl"),
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@contextmanager
def running(
    store: Store, web: WebConfig | None = None, render: Callable[[Store], bytes] = exposition
) -> Iterator[HttpServer]:
    server = HttpServer(f"127.0.0.1:{free_tcp_port()}", store, render, web or WebConfig())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def scrape(
    server: HttpServer,
    path: str = "/metrics",
    headers: dict[str, str] | None = None,
    cert: Path | None = None,
) -> tuple[int, float]:
    """(status, seconds) of one well-behaved request."""
    scheme = "https" if cert else "http"
    context = ssl.create_default_context(cafile=str(cert)) if cert else None
    req = urllib.request.Request(  # noqa: S310 - loopback
        f"{scheme}://127.0.0.1:{server.port}{path}", headers=headers or {}
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:  # noqa: S310
            resp.read()
            status = int(resp.status)
    except urllib.error.HTTPError as err:
        status = err.code
    return status, time.perf_counter() - started


def connect(server: HttpServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closes the connection (reading and discarding), or None."""
    started = time.perf_counter()
    sock.settimeout(0.05)
    while time.perf_counter() - started < seconds:
        try:
            if sock.recv(65536) == b"":
                return time.perf_counter() - started
        except TimeoutError:
            continue
        except OSError:
            return time.perf_counter() - started
    return None


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


def test_idle_tls_clients_do_not_block_scrapes(
    store: Store, tls_files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tls_files
    idle = []
    with running(store, WebConfig(str(cert), str(key))) as server:
        for _ in range(20):
            idle.append(connect(server))  # TCP only: no ClientHello, ever
        latencies = []
        for _ in range(5):
            status, seconds = scrape(server, cert=cert)
            assert status == 200
            latencies.append(seconds)
        assert max(latencies) < 2.0, latencies
        for sock in idle:
            sock.close()
    no_errors_logged(caplog)


def test_silent_tls_client_is_dropped_after_the_header_deadline(
    store: Store, tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poller.http, "HEADER_TIMEOUT", 1.0)
    cert, key = tls_files
    with running(store, WebConfig(str(cert), str(key))) as server, connect(server) as idle:
        seconds = closed_within(idle, 5.0)
        assert seconds is not None and 0.8 < seconds < 2.5, seconds


def test_tls_port_survives_garbage(
    store: Store, tls_files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tls_files
    with running(store, WebConfig(str(cert), str(key))) as server:
        for garbage in (b"GET / HTTP/1.0\r\n\r\n", b"\x16\x03\x01\x00\x05hello", b"\x00" * 512):
            with connect(server) as sock:
                sock.sendall(garbage)
                assert closed_within(sock, 5.0) is not None
        assert scrape(server, "/healthz", cert=cert)[0] == 200
    no_errors_logged(caplog)


def basic(user: str, password: bytes) -> dict[str, str]:
    token = base64.b64encode(user.encode() + b":" + password).decode()
    return {"Authorization": f"Basic {token}"}


def test_overlong_password_is_refused_with_401(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = b"p" * 72  # bcrypt's limit, still accepted
    hashed = bcrypt.hashpw(secret, bcrypt.gensalt(rounds=4)).decode()
    cfg = tmp_path / "web.yml"
    cfg.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    with running(store, WebConfig.load(str(cfg))) as server:
        assert scrape(server, headers=basic("prometheus", secret))[0] == 200
        for password in (secret + b"p", b"x" * 100, b"x" * 5000, b"nul\x00byte"):
            assert scrape(server, headers=basic("prometheus", password))[0] == 401
            assert scrape(server, headers=basic("nobody", password))[0] == 401
        assert scrape(server, headers={"Authorization": "Basic %%%"})[0] == 401
        assert scrape(server, headers={"Authorization": "Basic " + "ü" * 10})[0] == 401
    no_errors_logged(caplog)


def test_password_floods_cannot_take_every_core(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_checkpw = bcrypt.checkpw
    calls, active, most = [0], [0], [0]
    lock = threading.Lock()

    def slow_checkpw(password: bytes, hashed: bytes) -> bool:
        with lock:
            calls[0] += 1
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.1)  # a costly hash
        with lock:
            active[0] -= 1
        return bool(real_checkpw(password, hashed))

    monkeypatch.setattr(poller.http.bcrypt, "checkpw", slow_checkpw)
    hashed = bcrypt.hashpw(b"right-password", bcrypt.gensalt(rounds=4))
    web = WebConfig(users={"prometheus": hashed})
    good = basic("prometheus", b"right-password")
    with running(store, web) as server:
        assert scrape(server, headers=good)[0] == 200
        assert calls[0] == 1
        for _ in range(3):
            assert scrape(server, headers=good)[0] == 200
        assert calls[0] == 1  # the same credentials are checked by bcrypt once

        stop = threading.Event()

        def attacker() -> None:
            while not stop.is_set():
                assert scrape(server, headers=basic("prometheus", b"guess"))[0] == 401

        attackers = [threading.Thread(target=attacker) for _ in range(8)]
        for thread in attackers:
            thread.start()
        try:
            time.sleep(0.3)
            latencies = [scrape(server, headers=good) for _ in range(5)]
        finally:
            stop.set()
            for thread in attackers:
                thread.join(10)
        assert all(status == 200 for status, _ in latencies)
        assert max(seconds for _, seconds in latencies) < 0.5, latencies
        assert most[0] == poller.http.BCRYPT_CONCURRENCY == 2
        assert calls[0] > 5  # the attackers really were checked


def test_slowloris_is_dropped_at_the_header_deadline(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poller.http, "HEADER_TIMEOUT", 1.0)
    with running(store) as server, connect(server) as slow:
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        started = time.perf_counter()
        dropped = None
        while time.perf_counter() - started < 5.0:
            time.sleep(0.2)  # one header line every 0.2 s: each recv is quick, the whole never
            try:
                slow.sendall(b"X-Trickle: 1\r\n")
            except OSError:
                dropped = time.perf_counter() - started
                break
            assert scrape(server, "/healthz")[0] == 200
            if closed := closed_within(slow, 0.01):
                dropped = time.perf_counter() - started + closed
                break
        assert dropped is not None and dropped < 2.5, dropped


def test_request_head_is_capped(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    with running(store) as server:
        many = {f"X-Pad-{i}": "v" * 1000 for i in range(20)}  # 20 KB in lines of 1 KB
        assert scrape(server, headers=many)[0] == 431
        with connect(server) as sock:
            sock.sendall(b"GET /" + b"a" * 20000 + b" HTTP/1.0\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.0 431")
        with connect(server) as sock:
            # The old limits let 100 lines of 64 KiB through: 6 MB of headers per request.
            sock.sendall(b"GET /metrics HTTP/1.0\r\n")
            try:
                for _ in range(100):
                    sock.sendall(b"X-Big: " + b"v" * 60000 + b"\r\n")
            except OSError:
                pass  # the server answered 431 and closed while we were still sending
            assert sock.recv(100).startswith(b"HTTP/1.0 431")
        few = {f"X-Pad-{i}": "v" * 100 for i in range(20)}
        assert scrape(server, headers=few)[0] == 200
    no_errors_logged(caplog)


def test_idle_connections_beyond_the_cap_make_room_for_scrapes(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poller.http, "MAX_CONNECTIONS", 4)
    with running(store) as server:
        idle = [connect(server) for _ in range(20)]
        time.sleep(0.5)
        still_open = [s for s in idle if closed_within(s, 0.05) is None]
        assert len(still_open) <= 4
        before = threading.active_count()
        for _ in range(5):
            assert scrape(server)[0] == 200
        assert threading.active_count() <= before + 1
        for sock in idle:
            sock.close()


def test_connections_beyond_the_cap_are_refused_while_all_are_answering(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(poller.http, "MAX_CONNECTIONS", 4)
    # A machine booted seconds ago: the first refusal is logged all the same.
    start = time.perf_counter()
    monkeypatch.setattr(poller.http.time, "monotonic", lambda: 5.0 + time.perf_counter() - start)
    release = threading.Event()
    inside = threading.Semaphore(0)

    def slow_render(store: Store) -> bytes:
        inside.release()
        release.wait(10)
        return exposition(store)

    results: list[int] = []
    with running(store, render=slow_render) as server:
        workers = [
            threading.Thread(target=lambda: results.append(scrape(server)[0])) for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        for _ in range(4):
            assert inside.acquire(timeout=5)
        with connect(server) as extra:
            started = time.perf_counter()
            extra.settimeout(2)
            answer = extra.recv(100)
            assert time.perf_counter() - started < 1.0
            assert answer.startswith(b"HTTP/1.0 503") or answer == b""
        release.set()
        for worker in workers:
            worker.join(10)
        assert results == [200] * 4
        assert scrape(server)[0] == 200
    assert "refusing new ones" in caplog.text


def test_client_that_stops_reading_is_dropped(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poller.http, "RESPONSE_TIMEOUT", 1.0)
    body = b"# padding\n" * 800_000  # 8 MB: far more than the socket buffers hold

    with running(store, render=lambda _: body) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        time.sleep(0.3)
        assert len(server._server.connections) == 1  # stuck writing to us
        deadline = time.monotonic() + 5
        while server._server.connections and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not server._server.connections
        assert scrape(server, "/healthz")[0] == 200
        sock.close()


def test_listen_backlog(store: Store) -> None:
    # Not started: nothing accepts, so the kernel queues connections up to the backlog and then
    # stops answering (with the old backlog of 5, the seventh connection timed out).
    server = HttpServer(f"127.0.0.1:{free_tcp_port()}", store, exposition)
    queued: list[socket.socket] = []
    try:
        for _ in range(100):
            queued.append(socket.create_connection(("127.0.0.1", server.port), timeout=1))
    except OSError:
        pass
    finally:
        server.stop()
        for sock in queued:
            sock.close()
    assert len(queued) == 100
    assert poller.http.LISTEN_BACKLOG >= 100


def test_many_idle_connections_and_quick_stop(store: Store) -> None:
    with running(store) as server:
        idle = [connect(server) for _ in range(200)]  # over MAX_CONNECTIONS (64)
        latencies = [scrape(server)[1] for _ in range(10)]
        assert max(latencies) < 1.0, latencies
        started = time.perf_counter()
        server.stop()
        assert time.perf_counter() - started < 2.0
        for sock in idle:
            sock.close()


def test_garbage_requests_fuzz(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    with running(store) as server:

        @settings(
            max_examples=60,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(
            st.one_of(
                st.binary(max_size=3000),
                st.lists(
                    st.sampled_from(
                        [
                            b"GET ",
                            b"HEAD ",
                            b"POST ",
                            b"/metrics",
                            b" HTTP/1.1",
                            b" HTTP/9",
                            b"\r\n",
                            b"\n",
                            b": ",
                            b"Host",
                            b"Authorization: Basic ",
                            b"\x00",
                            b"\xff",
                            b"Content-Length: 99999999",
                            b"Transfer-Encoding: chunked",
                            b" " * 100,
                            b"%",
                            b"?",
                            b"gzip",
                        ]
                    ),
                    max_size=40,
                ).map(b"".join),
            )
        )
        def check(data: bytes) -> None:
            with connect(server) as sock:
                try:
                    sock.sendall(data)
                    sock.shutdown(socket.SHUT_WR)  # no more is coming: answer now
                    sock.settimeout(5)
                    reply = sock.recv(12)
                except OSError:
                    reply = b""
                assert reply == b"" or reply.startswith(b"HTTP/1."), reply

        check()
        assert scrape(server)[0] == 200
    no_errors_logged(caplog)


def test_hostile_headers_fuzz(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    header_text = st.text(
        st.characters(codec="latin-1", exclude_characters="\r\n"), min_size=1, max_size=200
    )
    with running(store) as server:

        @settings(
            max_examples=60,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(st.lists(st.tuples(header_text, header_text), max_size=30))
        def check(headers: list[tuple[str, str]]) -> None:
            head = b"GET /metrics HTTP/1.1\r\n" + b"".join(
                f"{name}: {value}\r\n".encode("latin-1") for name, value in headers
            )
            with connect(server) as sock:
                sock.sendall(head + b"\r\n")
                sock.settimeout(5)
                reply = sock.recv(12)
                assert reply[:9] in (b"HTTP/1.0 ", b""), reply

        check()
        assert scrape(server)[0] == 200
    no_errors_logged(caplog)
