"""HTTP endpoint: /metrics, /healthz, status page, gzip, TLS and bcrypt basic auth."""

from __future__ import annotations

import base64
import gzip
import re
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
        ("tls_server_config: cert.pem\n", "tls_server_config: must be a mapping"),
        ("tls_server_config: {cert_file: [a], key_file: b}\n", "cert_file: must be a file path"),
        ("basic_auth_users: [prometheus]\n", "basic_auth_users: must be a mapping"),
        ("basic_auth_users:\n  u: '$2b$10$short'\n", "basic_auth_users.u: expected a bcrypt"),
        ("basic_auth_users:\n  u: '$2b$31$" + "a" * 53 + "'\n", "bcrypt cost 31 makes every"),
        ("basic_auth_users:\n  u: 1\n  u: 2\n", "basic_auth_users.u: duplicate key"),
        (
            "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(
                f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
                for p, c in zip("abcde", "bcdef", strict=True)
            ),
            "aliases (*name) expand to more than",
        ),
        ("[" * 5000, "nesting depth"),
    ],
)
def test_web_config_errors(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "web.yml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
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


def test_web_config_binary_file(tmp_path: Path) -> None:
    cfg = tmp_path / "web.yml"
    cfg.write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(ConfigError, match="contains a NUL byte"):
        WebConfig.load(str(cfg))


def test_unusable_tls_files_are_one_clear_error(store: Store, tmp_path: Path) -> None:
    missing = WebConfig(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    with pytest.raises(OSError, match=r"cannot load the TLS certificate .*cert.pem"):
        HttpServer(f"127.0.0.1:{free_tcp_port()}", store, exposition, missing)
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    with pytest.raises(OSError, match=r"cannot load the TLS certificate"):
        HttpServer(f"127.0.0.1:{free_tcp_port()}", store, exposition, missing)


@pytest.mark.parametrize("address", ["no such host!:80", "127.0.0.1:0", "[::1"])
def test_bad_listen_address_is_an_os_error(store: Store, address: str) -> None:
    with pytest.raises(OSError, match=f"cannot listen on {re.escape(address)}: "):
        HttpServer(address, store, exposition)


def test_ipv6_listen_address(store: Store) -> None:
    server = HttpServer(f"[::1]:{free_tcp_port()}", store, exposition)
    server.start()
    try:
        assert get(f"http://[::1]:{server.port}/healthz")[0] == 200
    finally:
        server.stop()
