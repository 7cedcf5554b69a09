"""HTTP endpoint: /metrics, /healthz and a status page; optional TLS and bcrypt basic auth.

The web config file uses the Prometheus exporter-toolkit format (`tls_server_config`,
`basic_auth_users`) so operators can reuse what they already have for other exporters.
"""

from __future__ import annotations

import base64
import gzip
import html
import logging
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from poller import __version__
from poller.config_values import split_address
from poller.errors import ConfigError
from poller.store import Store, TargetView

log = logging.getLogger("hwpoller.http")

# Every hwpoller metric and label name is valid in the classic text format, so the 0.0.4
# content type is exact and understood by every Prometheus version still in use.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds a connection may stay silent before the server drops it.
REQUEST_TIMEOUT = 30.0


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

    @classmethod
    def load(cls, path: str) -> WebConfig:
        """Parse a web config file; ConfigError names the key at fault."""
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError([f"{path}: cannot read web config: {exc}"]) from None
        problems = []
        if not isinstance(raw, dict):
            raise ConfigError([f"{path}: the top level must be a mapping"])
        for key in raw:
            if key not in ("tls_server_config", "basic_auth_users"):
                problems.append(f"{path}: {key}: unknown key")
        tls = raw.get("tls_server_config") or {}
        cert, key = tls.get("cert_file"), tls.get("key_file")
        if bool(cert) != bool(key):
            problems.append(f"{path}: tls_server_config: give both cert_file and key_file")
        for k in tls:
            if k not in ("cert_file", "key_file"):
                problems.append(f"{path}: tls_server_config.{k}: unknown key")
        users: dict[str, bytes] = {}
        for user, hashed in (raw.get("basic_auth_users") or {}).items():
            if not isinstance(hashed, str) or not hashed.startswith("$2"):
                problems.append(f"{path}: basic_auth_users.{user}: expected a bcrypt hash")
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
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        # Compare against a dummy hash for unknown users so timing does not reveal names.
        target = hashed or b"$2b$10$" + b"." * 53
        ok = bcrypt.checkpw(password.encode(), target)
        return ok and hashed is not None


def _status_page(views: list[TargetView]) -> bytes:
    rows = []
    for v in views:
        last = v.last
        state = "up" if v.up else ("pending" if last is None else "down")
        detail = "" if last is None or last.success else f"{last.reason}: {last.message}"
        age = f"{time.time() - v.last_success_at:.0f}s ago" if v.last_success_at else "never"
        readings = len(last.data.readings) if last is not None and last.data else 0
        profile = last.data.info.profile if last is not None and last.data else ""
        cells = (v.name, v.protocol, state, profile, str(readings), age, detail)
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in ("target", "protocol", "state", "profile", "readings", "last success", "error")
    )
    body = (
        "<!doctype html><html><head><meta charset='utf-8'><title>hwpoller</title></head><body>"
        f"<h1>hwpoller {html.escape(__version__)}</h1>"
        "<p><a href='/metrics'>metrics</a> &middot; <a href='/healthz'>healthz</a></p>"
        f"<table border='1' cellpadding='4'><tr>{head}</tr>{''.join(rows)}</table>"
        "</body></html>"
    )
    return body.encode()


def make_handler(
    store: Store, render: Callable[[Store], bytes], web: WebConfig
) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to a store."""

    class Handler(BaseHTTPRequestHandler):
        server_version = f"hwpoller/{__version__}"
        # A client that connects and then sends nothing (or trickles) gives up its thread.
        timeout = REQUEST_TIMEOUT

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
                self._send(200, _status_page(store.snapshot()), "text/html; charset=utf-8")
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
        host, port = split_address(listen_address, 9730)
        web = web or WebConfig()
        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer((host, port), make_handler(store, render, web))
        self._server.daemon_threads = True
        if web.cert_file and web.key_file:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(web.cert_file, web.key_file)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful when listening on port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
