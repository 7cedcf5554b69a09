"""HTTP endpoint: /metrics, /healthz and a status page; optional TLS and bcrypt basic auth.

The web config file uses the Prometheus exporter-toolkit format (`tls_server_config`,
`basic_auth_users`) so operators can reuse what they already have for other exporters.

Every connection runs in its own thread (TLS handshake included) under limits, so that no
client, however slow, silent or hostile, can keep Prometheus from scraping. The accepting
thread sleeps in select() until a connection arrives, a connection's deadline passes or
stop() wakes it: an idle process gets no periodic wake-ups from the server.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import hmac
import http.client
import logging
import os
import re
import selectors
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from poller import __version__, statuspage
from poller.config_values import (
    MAX_CONFIG_BYTES,
    decode_config,
    load_yaml,
    parse_listen_address,
)
from poller.errors import ConfigError
from poller.store import Store

log = logging.getLogger("hwpoller.http")

# Every hwpoller metric and label name is valid in the classic text format, so the 0.0.4
# content type is exact and understood by every Prometheus version still in use.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Limits. Clients are Prometheus servers (an HA pair, perhaps a few), health checks and the odd
# browser: a handful of short requests at a time. The limits are far above that and far below
# what would let one misbehaving client starve the others, so they are constants, not settings.
#
# Seconds a connection may stay silent (one read or write) before the server drops it.
REQUEST_TIMEOUT = 30.0
# Seconds from accepting a connection to the end of its request headers, TLS handshake included.
# A scraper sends its request at once; a client trickling header lines is dropped here.
HEADER_TIMEOUT = 10.0
# Seconds from the end of the headers to the end of the response. /metrics renders from memory
# in milliseconds; this only bounds clients that stop reading the response.
RESPONSE_TIMEOUT = 60.0
# Connections served at once (each holds a thread). When all are taken, the one that has waited
# longest for its request headers is dropped to make room; a new connection is refused only
# when every slot is busy answering a request.
MAX_CONNECTIONS = 64
# Bytes of request line plus headers. A scrape with basic auth sends about 300.
MAX_HEADER_BYTES = 16 * 1024
# Connections the kernel queues while the accepting thread is busy: absorbs a burst of scrapes.
LISTEN_BACKLOG = 128
# bcrypt uses only the first 72 bytes of a password and the bcrypt library refuses longer
# ones; Go's bcrypt, which other exporters use, refuses them too, so they never match.
_BCRYPT_MAX_PASSWORD = 72
# bcrypt checks running at once (each takes ~50 ms of one core at cost 10), and how long a
# request waits for one: wrong passwords sent in a flood cannot take every core.
BCRYPT_CONCURRENCY = 2
BCRYPT_WAIT = 5.0
# Compared against for unknown users, at the cost most hashes use.
_DUMMY_HASH = b"$2b$10$" + b"." * 53
_BCRYPT_RE = re.compile(r"^\$2[abxy]?\$(\d\d)\$[./A-Za-z0-9]{53}$")
# Every request with credentials runs one bcrypt check; at cost 17 that is seconds of CPU.
_BCRYPT_MAX_COST = 16


class WebConfig:
    """TLS and basic-auth settings from a --web.config.file."""

    def __init__(
        self,
        cert_file: str | None = None,
        key_file: str | None = None,
        users: dict[str, bytes] | None = None,
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.users = users or {}
        # user -> SHA-256 of the password bcrypt last accepted for them. Prometheus sends the
        # same credentials on every scrape; without this each scrape costs a bcrypt check.
        self._verified: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._bcrypt_slots = threading.BoundedSemaphore(BCRYPT_CONCURRENCY)

    @classmethod
    def load(cls, path: str) -> WebConfig:
        """Parse a web config file; ConfigError names the key at fault."""
        try:
            with Path(path).open("rb") as handle:
                text = decode_config(handle.read(MAX_CONFIG_BYTES + 1))
            raw, problems = load_yaml(text)
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read web config: {exc.strerror}"]) from None
        except (ValueError, yaml.YAMLError) as exc:
            raise ConfigError([f"{path}: cannot read web config: {exc}"]) from None
        problems = [f"{path}: {p}" for p in problems]
        raw = raw or {}
        if not isinstance(raw, dict):
            raise ConfigError([f"{path}: the top level must be a mapping"])
        for key in raw:
            if key not in ("tls_server_config", "basic_auth_users"):
                problems.append(f"{path}: {key}: unknown key")
        tls = raw.get("tls_server_config") or {}
        if not isinstance(tls, dict):
            problems.append(f"{path}: tls_server_config: must be a mapping")
            tls = {}
        cert, key = tls.get("cert_file"), tls.get("key_file")
        if bool(cert) != bool(key):
            problems.append(f"{path}: tls_server_config: give both cert_file and key_file")
        for name, value in (("cert_file", cert), ("key_file", key)):
            if value is not None and not isinstance(value, str):
                problems.append(f"{path}: tls_server_config.{name}: must be a file path")
        for k in tls:
            if k not in ("cert_file", "key_file"):
                problems.append(f"{path}: tls_server_config.{k}: unknown key")
        listed = raw.get("basic_auth_users") or {}
        if not isinstance(listed, dict):
            problems.append(f"{path}: basic_auth_users: must be a mapping of user: bcrypt hash")
            listed = {}
        users: dict[str, bytes] = {}
        for user, hashed in listed.items():
            match = _BCRYPT_RE.match(hashed) if isinstance(hashed, str) else None
            if match is None or not isinstance(hashed, str):
                problems.append(f"{path}: basic_auth_users.{user}: expected a bcrypt hash")
                continue
            if int(match.group(1)) > _BCRYPT_MAX_COST:
                problems.append(
                    f"{path}: basic_auth_users.{user}: bcrypt cost {match.group(1)} makes every "
                    f"request take seconds; use a cost of at most {_BCRYPT_MAX_COST} (10 is usual)"
                )
                continue
            users[str(user)] = hashed.encode()
        if problems:
            raise ConfigError(problems)
        return cls(cert, key, users)

    def check_password(self, header: str | None) -> bool:
        """True when no users are configured or the Authorization header matches one."""
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, text = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        password = text.encode()
        hashed = self.users.get(user)
        digest = hashlib.sha256(password).digest()
        with self._lock:
            known = self._verified.get(user)
        if hashed is not None and known is not None and hmac.compare_digest(known, digest):
            return True
        # Compare against a dummy hash for unknown users and over-long passwords, so timing
        # reveals neither which names exist nor which passwords were refused unchecked.
        usable = hashed is not None and len(password) <= _BCRYPT_MAX_PASSWORD
        target = hashed if hashed is not None and usable else _DUMMY_HASH
        # A flood of wrong passwords may cost at most this many cores; past the wait, refuse.
        if not self._bcrypt_slots.acquire(timeout=BCRYPT_WAIT):
            return False
        try:
            ok = bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD], target)
        except ValueError:  # a hash bcrypt cannot parse: refuse rather than fail the request
            return False
        finally:
            self._bcrypt_slots.release()
        if ok and usable:
            with self._lock:
                self._verified[user] = digest
        return bool(ok) and usable


class _HeaderTooLargeError(http.client.HTTPException):
    """The request line and headers exceed MAX_HEADER_BYTES."""


class _HeaderBudget:
    """Wraps a connection's read file, failing once the request head passes a byte budget.

    http.server limits each header line (64 KiB) and their number (100), not their sum: ~6 MiB
    per request would be accepted."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.left = MAX_HEADER_BYTES

    def readline(self, limit: int = -1) -> bytes:
        """Read one line, counting it against the budget."""
        cap = self.left + 1 if limit < 0 else min(limit, self.left + 1)
        line: bytes = self.raw.readline(cap)
        self.left -= len(line)
        if self.left < 0:
            raise _HeaderTooLargeError(f"request headers exceed {MAX_HEADER_BYTES} bytes")
        return line

    def read(self, size: int = -1) -> bytes:
        """Read a request body (not counted: hwpoller reads none)."""
        data: bytes = self.raw.read(size)
        return data

    def close(self) -> None:
        """Close the wrapped file."""
        self.raw.close()


class _Connection:
    """One accepted connection: its socket, its phase and the deadline of that phase."""

    __slots__ = ("deadline", "dropped", "reading", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reading = True  # still waiting for the request head (or the TLS handshake)
        self.deadline = time.monotonic() + HEADER_TIMEOUT
        self.dropped = False

    def drop(self) -> None:
        """Shut the socket down, waking its thread whatever it is blocked in."""
        self.dropped = True
        # The plain socket call, also for an SSLSocket: its own shutdown() would tear down TLS
        # state that the connection's thread may be using right now. OSError: already closed.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a connection cap, deadlines and per-connection TLS."""

    daemon_threads = True
    block_on_close = False  # stop() must not wait for a client that stopped reading

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        tls: ssl.SSLContext | None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.request_queue_size = LISTEN_BACKLOG
        self.tls = tls
        self.lock = threading.Lock()
        self.connections: set[_Connection] = set()
        self.local = threading.local()
        # None: never logged (not 0.0: the monotonic clock may be below 60 s after boot).
        self._refused_logged: float | None = None
        self._stopping = False
        self._wake_at = float("inf")  # when serve() wakes at the latest (monotonic)
        # stop_serving() and headers_read() write a byte here to wake serve() from select().
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        try:
            super().__init__(address, handler)
        except BaseException:
            self._close_pipe()
            raise
        # select() may report a connection that is reset before accept(): never block there.
        self.socket.setblocking(False)

    def _close_pipe(self) -> None:
        # Once only: a descriptor number closed twice may by then be another file's.
        fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def server_close(self) -> None:
        """Close the listening socket and the wake-up pipe."""
        super().server_close()
        self._close_pipe()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Admit the connection (dropping the longest-waiting one when full) and start its
        thread; runs in the accepting thread, so it never blocks."""
        with self.lock:
            live = [c for c in self.connections if not c.dropped]
            if len(live) >= MAX_CONNECTIONS:
                waiting = [c for c in live if c.reading]
                # Dropped connections still hold threads until they notice; never more than
                # twice the cap in all.
                if not waiting or len(self.connections) >= 2 * MAX_CONNECTIONS:
                    self._refuse(request)
                    return
                min(waiting, key=lambda c: c.deadline).drop()
            conn = _Connection(request)
            self.connections.add(conn)
        thread = threading.Thread(
            target=self._serve_connection, args=(conn, client_address), daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # the OS refused another thread
            with self.lock:
                self.connections.discard(conn)
            self._refuse(request)

    def _refuse(self, request: socket.socket) -> None:
        now = time.monotonic()
        if self._refused_logged is None or now - self._refused_logged > 60:
            self._refused_logged = now
            log.warning("%d connections are being answered; refusing new ones", MAX_CONNECTIONS)
        if self.tls is None:
            try:
                request.setblocking(False)
                request.send(
                    b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )
            except OSError:
                pass
        self.shutdown_request(request)

    def _serve_connection(self, conn: _Connection, client_address: Any) -> None:
        self.local.conn = conn
        request: socket.socket | None = conn.sock
        try:
            if self.tls is not None:
                request = self._handshake(conn, client_address)
            if request is not None:
                self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - as socketserver does; handle_error logs it
            self.handle_error(request, client_address)
        finally:
            with self.lock:
                self.connections.discard(conn)
            self.shutdown_request(conn.sock)

    def _handshake(self, conn: _Connection, client_address: Any) -> ssl.SSLSocket | None:
        """The TLS handshake, in the connection's own thread under its header deadline (in
        the accepting thread, one silent client would block every other)."""
        assert self.tls is not None  # noqa: S101 - only called with TLS configured
        conn.sock.settimeout(REQUEST_TIMEOUT)
        try:
            tls_sock = self.tls.wrap_socket(
                conn.sock, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ValueError) as exc:
            log.debug("%s: cannot start TLS: %s", client_address[0], exc)
            return None
        with self.lock:
            conn.sock = tls_sock  # wrap_socket took over the descriptor
            if conn.dropped:
                conn.drop()
        try:
            tls_sock.do_handshake()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.debug("%s: TLS handshake failed: %s", client_address[0], exc)
            return None
        return tls_sock

    def headers_read(self) -> None:
        """The connection's request head is in: switch it to the response deadline."""
        conn: _Connection | None = getattr(self.local, "conn", None)
        if conn is not None:
            with self.lock:
                conn.reading = False
                conn.deadline = time.monotonic() + RESPONSE_TIMEOUT
                # Sooner than serve() means to wake (a response deadline shorter than what
                # is left of the header one): wake it to sleep for less.
                sooner = conn.deadline < self._wake_at
            if sooner:
                self._wake()

    def serve(self) -> None:
        """Accept connections until stop_serving(); runs in the accepting thread.

        socketserver's serve_forever() wakes every poll interval to check the deadlines (4
        times a second at 0.25 s) whether or not a connection is open. This loop sleeps until
        a connection arrives, the earliest deadline of an open one passes or stop_serving()
        writes to the wake-up pipe: with no client, it sleeps until the next scrape."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ, "accept")
            selector.register(self._wake_r, selectors.EVENT_READ, "wake")
            while not self._stopping:
                for key, _ in selector.select(self._next_deadline()):
                    if key.data == "wake":
                        with contextlib.suppress(OSError):  # drained: nothing to read
                            os.read(self._wake_r, 4096)
                    elif not self._stopping:
                        self._accept()
                self.drop_late()

    def stop_serving(self) -> None:
        """Make serve() return (from any thread)."""
        self._stopping = True
        self._wake()

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):  # the pipe is full: serve() wakes anyway
                os.write(self._wake_w, b"x")

    def _next_deadline(self) -> float | None:
        """Seconds until the earliest deadline of an open connection; None: no connection.
        A deadline set earlier than this while serve() sleeps wakes it (headers_read); one
        that passes unseen because its connection ended costs one wake-up for nothing."""
        with self.lock:
            deadlines = [c.deadline for c in self.connections if not c.dropped]
            self._wake_at = min(deadlines, default=float("inf"))
        return max(0.0, self._wake_at - time.monotonic()) if deadlines else None

    def _accept(self) -> None:
        """Accept one connection and admit it (socketserver's _handle_request_noblock)."""
        try:
            request, client_address = self.get_request()
        except OSError:  # the client gave up before we accepted (the socket is non-blocking)
            return
        if self.verify_request(request, client_address):
            try:
                self.process_request(request, client_address)
            except Exception:  # noqa: BLE001 - as socketserver does; handle_error logs it
                self.handle_error(request, client_address)
                self.shutdown_request(request)
        else:
            self.shutdown_request(request)

    def drop_late(self) -> None:
        """Drop connections past their deadline."""
        now = time.monotonic()
        with self.lock:
            for conn in self.connections:
                if not conn.dropped and now >= conn.deadline:
                    conn.drop()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One debug line for a client that went away; a traceback only for our bugs."""
        exc = sys.exc_info()[1]
        peer = client_address[0] if client_address else "?"
        if isinstance(exc, OSError | ValueError):
            log.debug("%s: connection ended: %s", peer, exc)
        else:
            log.exception("error answering %s", peer)

    def drop_all(self) -> None:
        """Shut every open connection down (at stop)."""
        with self.lock:
            for conn in self.connections:
                conn.drop()


def make_handler(
    store: Store, render: Callable[[Store], bytes], web: WebConfig
) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to a store."""

    class Handler(BaseHTTPRequestHandler):
        server_version = f"hwpoller/{__version__}"
        # Answer a malformed request line with a status line too, never as HTTP/0.9 would.
        default_request_version = "HTTP/1.0"
        # A client that connects and then sends nothing (or trickles) gives up its thread.
        timeout = REQUEST_TIMEOUT

        def setup(self) -> None:
            super().setup()
            self.rfile = _HeaderBudget(self.rfile)  # type: ignore[assignment]

        def handle_one_request(self) -> None:
            try:
                super().handle_one_request()
            except _HeaderTooLargeError:
                # Over budget in the request line itself (over it in a header line,
                # parse_request answers 431 on its own).
                self.requestline, self.request_version, self.command = "", "", ""
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
                self.close_connection = True

        def parse_request(self) -> bool:
            ok = super().parse_request()
            if ok and isinstance(self.server, _Server):
                self.server.headers_read()
            return ok

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            if "gzip" in (self.headers.get("Accept-Encoding") or "") and len(body) > 1024:
                body = gzip.compress(body, compresslevel=5)
                self.send_response(code)
                self.send_header("Content-Encoding", "gzip")
            else:
                self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            if not web.check_password(self.headers.get("Authorization")):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="hwpoller"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, render(store), CONTENT_TYPE)
            elif path == "/healthz":
                self._send(200, b"ok\n", "text/plain; charset=utf-8")
            elif path == "/":
                self._send(200, statuspage.page(store), "text/html; charset=utf-8")
            elif path == "/api/room":
                self._send(200, statuspage.room_json(store), "application/json")
            else:
                self._send(404, b"not found\n", "text/plain; charset=utf-8")

        do_HEAD = do_GET

    return Handler


class HttpServer:
    """The threaded HTTP server, started and stopped with the poller."""

    def __init__(
        self,
        listen_address: str,
        store: Store,
        render: Callable[[Store], bytes],
        web: WebConfig | None = None,
    ) -> None:
        web = web or WebConfig()
        try:
            host, port = parse_listen_address(listen_address, 9730)
        except ValueError as exc:
            raise OSError(f"cannot listen on {listen_address}: {exc}") from None
        context = None
        if web.cert_file and web.key_file:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                context.load_cert_chain(web.cert_file, web.key_file)
            except (OSError, ValueError) as exc:
                reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
                raise OSError(
                    f"cannot load the TLS certificate {web.cert_file} and key {web.key_file}: "
                    f"{reason}"
                ) from None
        _Server.allow_reuse_address = True
        try:
            self._server = _Server((host, port), make_handler(store, render, web), context)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise OSError(f"cannot listen on {listen_address}: {reason}") from None
        self._thread = threading.Thread(target=self._server.serve, name="http", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful when listening on port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and every open connection."""
        self._server.stop_serving()
        if self._thread.ident is not None:
            self._thread.join()
        self._server.server_close()
        self._server.drop_all()
