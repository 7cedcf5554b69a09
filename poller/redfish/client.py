"""One Redfish service over HTTP(S) with aiohttp: sessions, limits, and a hostile peer.

Every request goes through here: at most `max_concurrency` in flight, no redirects
followed, bodies capped at MAX_BODY, JSON objects only, links resolved only within the
service. Every failure is a DeviceError with a message that names the resource and never
a credential: the password travels only in the login body or the basic-auth header, the
session token only in the X-Auth-Token header, and neither is ever part of a message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp

from poller.errors import (
    AuthError,
    DeviceError,
    DeviceTimeoutError,
    ProtocolError,
    UnreachableError,
    UnsupportedError,
)
from poller.redfish.auth import RedfishAuth, RedfishOptions

if TYPE_CHECKING:
    from collections.abc import Mapping

# The largest Redfish answer read: a $expand of a few hundred sensors is ~1 MiB; anything
# past this is a broken or hostile service, not data.
MAX_BODY = 4 * 1024 * 1024
# How long logging out may take at close(): a hung BMC must not hold up a reload.
LOGOUT_TIMEOUT = 2.0
# How much of a device-supplied string goes into a message.
_SHOWN = 120
ROOT = "/redfish/v1/"

JsonObject = dict[str, object]


def shown(text: str) -> str:
    """A device-supplied string, shortened and made printable for a message."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= _SHOWN else clean[:_SHOWN] + "..."


def make_ssl(auth: RedfishAuth) -> ssl.SSLContext | bool:
    """The TLS policy: verify against the system store or ca_file; tls_insecure: none."""
    if auth.tls_insecure:
        return False
    context = ssl.create_default_context()
    if auth.ca_pem:
        context.load_verify_locations(cadata=auth.ca_pem)
    return context


class RedfishClient:
    """HTTP to one Redfish service; the session (token or basic auth) is kept across polls."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        auth: RedfishAuth,
        options: RedfishOptions,
        timeout: float,
    ) -> None:
        self._scheme = scheme
        self._host = host.lower()
        self._port = port
        netloc = f"[{host}]" if ":" in host else host
        self._base = f"{scheme}://{netloc}:{port}"
        self._auth = auth
        self._options = options
        self._timeout = timeout
        self._ssl = make_ssl(auth) if scheme == "https" else False
        self._http: aiohttp.ClientSession | None = None
        self._limit = asyncio.Semaphore(options.max_concurrency)
        self._token: str | None = None
        self._session_path: str | None = None
        self._basic = False  # basic auth on every request (no session in use)
        self._sessions_uri = ""
        self.requests = 0  # HTTP requests sent, logins and logouts included
        self.logins = 0  # session logins attempted

    # -- plumbing -----------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(
                limit=self._options.max_concurrency, ssl=self._ssl, ttl_dns_cache=300
            )
            self._http = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                # A service answering with a 100 KB header line is hostile, not chatty.
                max_line_size=16384,
                max_field_size=16384,
                headers={"Accept": "application/json", "OData-Version": "4.0"},
            )
        return self._http

    def _headers(self) -> dict[str, str]:
        if self._token is not None:
            return {"X-Auth-Token": self._token}
        if self._basic:
            pair = f"{self._auth.username}:{self._auth.password.get_secret_value()}"
            return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}
        return {}

    def resolve(self, link: object) -> str:
        """The path of a link the service gave, which must stay on the service."""
        if not isinstance(link, str) or not link:
            raise ProtocolError(f"a link is not a string: {shown(repr(link))}")
        if any(c.isspace() or not c.isprintable() for c in link):
            raise ProtocolError(f"a link holds spaces or control characters: {shown(repr(link))}")
        if link.startswith("/") and not link.startswith("//"):
            path = link.partition("#")[0]
        else:
            try:
                parts = urlsplit(link)
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:
                raise ProtocolError(f"a link is not a URL: {shown(link)}") from None
            same = (
                parts.scheme == self._scheme
                and (parts.hostname or "").lower() == self._host
                and port == self._port
            )
            if not same:
                raise ProtocolError(f"a link points off the service: {shown(link)}")
            path = parts.path
            if parts.query:
                path += "?" + parts.query
        if not path.startswith("/redfish/") or "/../" in path or path.endswith("/.."):
            raise ProtocolError(f"a link leaves /redfish/: {shown(link)}")
        return path

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One request: status, headers, body (capped); DeviceError on any failure."""
        client = self._client()
        async with self._limit:
            self.requests += 1
            try:
                async with client.request(
                    method,
                    self._base + path,
                    json=body,
                    headers=dict(headers) if headers is not None else None,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=deadline or self._timeout),
                ) as rsp:
                    length = rsp.content_length
                    if length is not None and length > MAX_BODY:
                        raise ProtocolError(
                            f"{shown(path)}: answer of {length} bytes is larger than "
                            f"{MAX_BODY // (1024 * 1024)} MiB"
                        )
                    data = bytearray()
                    async for chunk in rsp.content.iter_chunked(65536):
                        data += chunk
                        if len(data) > MAX_BODY:
                            raise ProtocolError(
                                f"{shown(path)}: answer is larger than "
                                f"{MAX_BODY // (1024 * 1024)} MiB"
                            )
                    return rsp.status, rsp.headers, bytes(data)
            except DeviceError:
                raise
            except TimeoutError:
                raise DeviceTimeoutError(
                    f"{shown(path)}: no answer within {deadline or self._timeout:.3g}s"
                ) from None
            except aiohttp.ClientConnectorCertificateError:
                raise ProtocolError(
                    f"TLS: the service's certificate is not trusted ({self._base}); "
                    "give its CA in ca_file, or set tls_insecure: true"
                ) from None
            except aiohttp.ClientSSLError as exc:
                raise ProtocolError(f"TLS handshake with {self._base} failed: {exc}") from None
            except aiohttp.ClientConnectorError as exc:
                raise UnreachableError(f"cannot connect to {self._base}: {exc.os_error}") from None
            except aiohttp.ServerDisconnectedError:
                raise ProtocolError(f"{shown(path)}: the service closed the connection") from None
            except aiohttp.ClientError as exc:
                raise ProtocolError(
                    f"{shown(path)}: broken HTTP answer ({type(exc).__name__})"
                ) from None
            except (OSError, ValueError) as exc:
                raise UnreachableError(f"{self._base}: {type(exc).__name__}") from None

    @staticmethod
    def _decode(path: str, data: bytes) -> JsonObject:
        try:
            found = json.loads(data)
        except (ValueError, RecursionError):
            raise ProtocolError(f"{shown(path)}: the answer is not JSON") from None
        if not isinstance(found, dict):
            raise ProtocolError(f"{shown(path)}: the answer is not a JSON object")
        return found

    # -- the API ------------------------------------------------------------------------

    async def root(self) -> JsonObject:
        """The service root (unauthenticated in Redfish; sent with credentials when held)."""
        status, _, data = await self._send("GET", ROOT, headers=self._headers())
        if status != 200:
            raise ProtocolError(f"{ROOT}: HTTP {status}; is this a Redfish service?")
        return self._decode(ROOT, data)

    async def get(self, path: str) -> tuple[int, JsonObject | None]:
        """GET a resource: (200, object), or (status, None) for 404 and other refusals.

        A 401 with a session logs in again once and repeats the request; a 401 after that,
        or with basic auth, is an AuthError.
        """
        status, _, data = await self._send("GET", path, headers=self._headers())
        if status == 401 and self._token is not None and self._session_path is not None:
            # The session expired (BMCs time them out after minutes) or the BMC restarted.
            self._token = self._session_path = None
            await self.login(self._sessions_uri)
            status, _, data = await self._send("GET", path, headers=self._headers())
        if status in (401, 403):
            raise AuthError(
                f"{shown(path)}: HTTP {status}: the service refused the credentials "
                f"of user {shown(self._auth.username)!r}"
            )
        if 300 <= status < 400:
            raise ProtocolError(f"{shown(path)}: HTTP {status} redirect (not followed)")
        if status != 200:
            return status, None
        return status, self._decode(path, data)

    async def login(self, sessions_uri: str) -> None:
        """Start a session (POST to SessionService/Sessions), or settle for basic auth.

        With `session: never`, or `auto` and a service that offers no sessions (no URI, 404,
        405, 501, or an answer without a token), requests carry basic auth instead.
        """
        self._sessions_uri = sessions_uri
        mode = self._auth.session
        if mode == "never" or (mode == "auto" and not sessions_uri):
            self._basic = True
            return
        if not sessions_uri:
            raise UnsupportedError("session: always, but the service offers no SessionService")
        self.logins += 1
        credentials = {
            "UserName": self._auth.username,
            "Password": self._auth.password.get_secret_value(),
        }
        status, headers, data = await self._send("POST", sessions_uri, body=credentials)
        if status in (401, 403):
            raise AuthError(
                f"login: HTTP {status}: the service rejected user "
                f"{shown(self._auth.username)!r} or its password"
            )
        token = headers.get("X-Auth-Token")
        if 200 <= status < 300 and token:
            if not all(c.isascii() and c.isprintable() and c != " " for c in token):
                raise ProtocolError("login: the session token holds unprintable characters")
            self._token = token
            self._basic = False
            self._session_path = self._session_location(headers, data)
            return
        if mode == "auto" and (status in (404, 405, 501) or 200 <= status < 300):
            # A service without working sessions (sushy-static answers 204, no token).
            self._basic = True
            return
        if 200 <= status < 300:
            raise ProtocolError("login: the service answered without an X-Auth-Token")
        raise ProtocolError(f"login: HTTP {status} from {shown(sessions_uri)}")

    def _session_location(self, headers: Mapping[str, str], data: bytes) -> str | None:
        """Where the session lives (to DELETE it): the Location header, else @odata.id."""
        candidates: list[object] = [headers.get("Location")]
        if data:
            try:
                body = json.loads(data)
            except (ValueError, RecursionError):
                body = None
            if isinstance(body, dict):
                candidates.append(body.get("@odata.id"))
        for candidate in candidates:
            if isinstance(candidate, str) and candidate:
                try:
                    return self.resolve(candidate)
                except ProtocolError:
                    continue
        return None

    @property
    def has_session(self) -> bool:
        """Whether requests carry a session token."""
        return self._token is not None

    @property
    def authenticated(self) -> bool:
        """Whether login() has settled how requests authenticate."""
        return self._token is not None or self._basic

    def forget(self) -> None:
        """Drop the session state without logging out (the service is being replaced)."""
        self._token = self._session_path = None
        self._basic = False

    async def logout(self) -> None:
        """DELETE the session, if there is one; errors are ignored (it times out anyway)."""
        path, headers = self._session_path, self._headers()
        had_token = self._token is not None
        self.forget()
        if not had_token or path is None:
            return
        with contextlib.suppress(DeviceError):
            await self._send("DELETE", path, headers=headers, deadline=LOGOUT_TIMEOUT)

    async def close(self) -> None:
        """Log out and close the connections."""
        try:
            async with asyncio.timeout(LOGOUT_TIMEOUT + 1):
                await self.logout()
        except TimeoutError:
            pass
        if self._http is not None:
            await self._http.close()
            self._http = None
