"""A small etcd v3 client over etcd's JSON gRPC gateway (/v3/...), on aiohttp.

Why not a PyPI client: the maintained ones pull in grpcio (a large native wheel, its own
threads and event loop) for the five calls hwpoller needs; aiohttp is already a dependency
(Redfish), and the gateway ships in every etcd v3 server, Debian's 3.4 included. Keys and
values travel base64-encoded, as the gateway's JSON mapping of bytes fields requires.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import aiohttp

log = logging.getLogger("hwpoller.cluster")


class EtcdError(Exception):
    """etcd could not be reached, or answered with an error."""


class LeaseLostError(EtcdError):
    """The lease is gone (expired or revoked): this member is no longer registered."""


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _unb64(data: str) -> bytes:
    return base64.b64decode(data)


def prefix_end(prefix: str) -> bytes:
    """The range end covering every key that starts with `prefix` (etcd's convention)."""
    raw = bytearray(prefix.encode())
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd returned it."""

    key: str
    value: bytes
    lease: int
    create_revision: int


def _kv(item: dict[str, Any]) -> KeyValue:
    return KeyValue(
        _unb64(item.get("key", "")).decode(errors="replace"),
        _unb64(item.get("value", "")),
        int(item.get("lease", 0)),
        int(item.get("create_revision", 0)),
    )


class EtcdClient:
    """Requests to the first endpoint that answers; the next one after a failure."""

    def __init__(
        self,
        endpoints: list[str],
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._endpoints = list(endpoints)
        self._current = 0
        self._timeout = timeout
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._username = username
        self._password = password  # never logged: only sent in the authenticate body
        self._token: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self.requests: dict[str, int] = {}
        self.errors = 0

    @property
    def endpoint(self) -> str:
        """The endpoint requests go to now."""
        return self._endpoints[self._current]

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=4)
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post_once(self, endpoint: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": self._token} if self._token else {}
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with self._http().post(
            endpoint + path, json=body, headers=headers, timeout=timeout
        ) as resp:
            text = await resp.text()
            try:
                answer: Any = json.loads(text) if text else {}
            except ValueError:
                answer = {"error": text[:200]}
            if not isinstance(answer, dict):
                answer = {"error": "unexpected answer"}
            result = cast(dict[str, Any], answer)
            if resp.status != 200:
                message = str(result.get("message") or result.get("error") or resp.reason)
                raise EtcdError(f"{endpoint}{path}: HTTP {resp.status}: {message}")
            return result

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST one request; on a connection problem try each other endpoint once."""
        name = path.rsplit("/", 2)[-2] + "/" + path.rsplit("/", 1)[-1]
        self.requests[name] = self.requests.get(name, 0) + 1
        problems = []
        for _ in range(len(self._endpoints)):
            endpoint = self.endpoint
            try:
                if self._username and self._token is None:
                    await self._authenticate(endpoint)
                try:
                    return await self._post_once(endpoint, path, body)
                except EtcdError as exc:
                    if self._username and "token" in str(exc).lower():
                        # Tokens expire (etcd's simple tokens after 5 minutes idle): once more.
                        self._token = None
                        await self._authenticate(endpoint)
                        return await self._post_once(endpoint, path, body)
                    raise
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problems.append(f"{endpoint}: {_describe(exc)}")
                self._current = (self._current + 1) % len(self._endpoints)
            except EtcdError as exc:
                # A member without quorum answers with an error: another may have it.
                problems.append(str(exc))
                self._current = (self._current + 1) % len(self._endpoints)
        self.errors += 1
        raise EtcdError("; ".join(problems))

    async def _authenticate(self, endpoint: str) -> None:
        self._token = None
        answer = await self._post_once(
            endpoint, "/v3/auth/authenticate", {"name": self._username, "password": self._password}
        )
        token = answer.get("token")
        if not isinstance(token, str):
            raise EtcdError(f"{endpoint}: authentication gave no token")
        self._token = token

    async def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, granted ttl)."""
        answer = await self.call("/v3/lease/grant", {"TTL": ttl})
        return int(answer["ID"]), int(answer.get("TTL", ttl))

    async def keepalive(self, lease: int) -> int:
        """Refresh a lease; its remaining ttl. LeaseLostError when etcd no longer has it."""
        answer = await self.call("/v3/lease/keepalive", {"ID": lease})
        result = answer.get("result", answer)
        ttl = int(result.get("TTL", 0)) if isinstance(result, dict) else 0
        if ttl <= 0:
            raise LeaseLostError(f"lease {lease:x} has expired")
        return ttl

    async def revoke(self, lease: int) -> None:
        """Give a lease up (its keys go at once)."""
        await self.call("/v3/lease/revoke", {"ID": lease})

    async def put_if_absent(self, key: str, value: bytes, lease: int) -> KeyValue | None:
        """Create the key with the lease unless it exists; None on success, else the key
        that is there."""
        answer = await self.call(
            "/v3/kv/txn",
            {
                "compare": [
                    {
                        "key": _b64(key),
                        "target": "CREATE",
                        "result": "EQUAL",
                        "create_revision": "0",
                    }
                ],
                "success": [
                    {"request_put": {"key": _b64(key), "value": _b64(value), "lease": lease}}
                ],
                "failure": [{"request_range": {"key": _b64(key)}}],
            },
        )
        if answer.get("succeeded"):
            return None
        for response in answer.get("responses", []):
            for item in response.get("response_range", {}).get("kvs", []):
                return _kv(item)
        return KeyValue(key, b"", 0, 0)  # gone again meanwhile: the caller retries

    async def range_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under the prefix and the store's revision."""
        answer = await self.call(
            "/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        )
        revision = int(answer.get("header", {}).get("revision", 0))
        return [_kv(item) for item in answer.get("kvs", [])], revision

    async def watch_prefix(self, prefix: str, start_revision: int) -> AsyncIterator[int]:
        """Yield a revision for every change under the prefix, until the stream breaks
        (EtcdError). The caller re-reads the keys: events only say that something moved."""
        body = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _b64(prefix_end(prefix)),
                "start_revision": start_revision,
            }
        }
        self.requests["watch/create"] = self.requests.get("watch/create", 0) + 1
        headers = {"Authorization": self._token} if self._token else {}
        # No total timeout: the stream lasts as long as the member. The connect timeout
        # and etcd's progress notifications keep a dead endpoint from hanging it.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout)
        try:
            async with self._http().post(
                self.endpoint + "/v3/watch", json=body, headers=headers, timeout=timeout
            ) as resp:
                if resp.status != 200:
                    raise EtcdError(f"watch: HTTP {resp.status}")
                async for line in resp.content:
                    if not line.strip():
                        continue
                    try:
                        message = json.loads(line)
                    except ValueError:
                        continue
                    result = message.get("result", {}) if isinstance(message, dict) else {}
                    if "error" in message or result.get("canceled"):
                        raise EtcdError(f"watch ended: {message.get('error') or result}")
                    if result.get("events"):
                        yield int(result.get("header", {}).get("revision", 0))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise EtcdError(f"watch: {_describe(exc)}") from None
        raise EtcdError("watch stream closed")


def _describe(exc: BaseException) -> str:
    """A short reason for a connection problem, for one log line."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "no answer in time"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def ssl_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """A verifying TLS context for etcd: the private CA, and a client certificate."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file and key_file:
        context.load_cert_chain(cert_file, key_file)
    return context
