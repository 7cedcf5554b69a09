"""HTTP endpoint: /metrics, /healthz, status page, gzip, TLS and bcrypt basic auth."""

from __future__ import annotations

import base64
import gzip
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from poller.errors import ConfigError
from poller.exporter import exposition
from poller.http import HttpServer, WebConfig
from poller.model import DeviceData, DeviceInfo, PollResult, Quantity, Reading
from poller.store import Store
from tests.test_run_e2e import free_tcp_port
from tests.util import require


@pytest.fixture
def store() -> Store:
    store = Store()
    store.register("ups-1", "snmp", {"site": "hq"})
    store.register("env-<b>", "snmp", {})
    readings = tuple(Reading(Quantity.FAN_SPEED, f"fan {i}", 1000.0 + i) for i in range(200))
    store.record(PollResult("ups-1", "snmp", True, 0.2, 1.0, DeviceData(DeviceInfo(), readings)))
    store.record(
        PollResult(
            "env-<b>", "snmp", False, 1.0, 2.0, reason="timeout", message="no answer <script>"
        )
    )
    return store


def serve(store: Store, web: WebConfig) -> Iterator[HttpServer]:
    server = HttpServer(f"127.0.0.1:{free_tcp_port()}", store, exposition, web)
    server.start()
    yield server
    server.stop()


def get(
    url: str, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:  # noqa: S310
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_plain_endpoints(store: Store) -> None:
    for server in serve(store, WebConfig()):
        base = f"http://127.0.0.1:{server.port}"
        status, headers, body = get(f"{base}/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert b'hw_fan_speed_rpm{device="ups-1",sensor="fan 0",site="hq"} 1000.0' in body
        status, headers, zipped = get(f"{base}/metrics", {"Accept-Encoding": "gzip"})
        assert headers.get("Content-Encoding") == "gzip"
        assert gzip.decompress(zipped) == body
        assert get(f"{base}/healthz")[2] == b"ok\n"
        page = get(f"{base}/")[2].decode()
        assert "ups-1" in page
        assert "env-&lt;b&gt;" in page  # names and messages are escaped
        assert "<script>" not in page
        assert get(f"{base}/missing")[0] == 404


def test_basic_auth(store: Store, tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret-web", bcrypt.gensalt(rounds=4)).decode()
    cfg = tmp_path / "web.yml"
    cfg.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    for server in serve(store, WebConfig.load(str(cfg))):
        url = f"http://127.0.0.1:{server.port}/metrics"
        status, headers, _ = get(url)
        assert status == 401
        assert "Basic" in headers["WWW-Authenticate"]
        bad = base64.b64encode(b"prometheus:wrong").decode()
        assert get(url, {"Authorization": f"Basic {bad}"})[0] == 401
        unknown = base64.b64encode(b"nobody:s3cret-web").decode()
        assert get(url, {"Authorization": f"Basic {unknown}"})[0] == 401
        good = base64.b64encode(b"prometheus:s3cret-web").decode()
        assert get(url, {"Authorization": f"Basic {good}"})[0] == 200


def test_tls(store: Store, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            require("openssl"),
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
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
    cfg = tmp_path / "web.yml"
    cfg.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    for server in serve(store, WebConfig.load(str(cfg))):
        context = ssl.create_default_context(cafile=str(cert))
        status, _, body = get(f"https://127.0.0.1:{server.port}/healthz", context=context)
        assert status == 200
        assert body == b"ok\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config:\n  cert_file: a.pem\n", "give both cert_file and key_file"),
        ("basic_auth_users:\n  u: plaintext\n", "expected a bcrypt hash"),
        ("http_server_config: {}\n", "http_server_config: unknown key"),
    ],
)
def test_web_config_errors(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "web.yml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message):
        WebConfig.load(str(cfg))


def test_silent_client_is_dropped(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import poller.http

    monkeypatch.setattr(poller.http, "REQUEST_TIMEOUT", 0.5)
    for server in serve(store, WebConfig()):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as idle:
            # Send nothing: the server must close the connection after its timeout.
            idle.settimeout(5)
            assert idle.recv(1) == b""
        # The server still answers others.
        assert get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200
