"""One Redfish service over HTTP(S) with aiohttp: sessions, limits, and a hostile peer.

Every request goes through here: at most `max_concurrency` in flight, no redirects
followed, bodies capped at MAX_BODY, JSON objects only, links resolved only within the
service, and what the answers may make this process hold bounded (MAX_VALUES per answer,
MAX_POLL_VALUES per poll, LARGE_BODIES large answers at once in the whole process). A
session this client created is DELETEd whenever it is dropped, and logged in again at most
once per poll. Every failure is a DeviceError with a message that names the resource and never
a credential: the password travels only in the login body or the basic-auth header, the
session token only in the X-Auth-Token header, and neither is ever part of a message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import weakref
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
# Values one answer may hold, estimated from its text at C speed: commas (array elements
# and object members past the first) plus objects (a dict is the costliest value, ~200
# bytes decoded). Decoded JSON costs ~100 bytes per value, so a 4 MiB answer of 100,000
# small objects held ~40 MB; three such services took the process from 73 MB to 338 MB.
# At this cap an answer decodes to at most ~7 MB; a $expand of 512 sensors with their
# thresholds counts ~20,000.
MAX_VALUES = 65536
# Values all answers of one poll may hold: the readers keep a poll's resources until its
# readings are made, so this bounds what one service can make the process hold.
MAX_POLL_VALUES = 4 * MAX_VALUES
# An answer this large takes one of LARGE_BODIES places shared by every Redfish target of
# the process while it is read and decoded: healthy answers are ~1-100 KB, so only
# hostile or huge ones wait, and they cannot all hold a 4 MiB buffer, its copy and the
# decoded objects at once.
LARGE_BODY = 512 * 1024
LARGE_BODIES = 2
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


# Per event loop (tests run several loops in one process): the large-answer places.
_LARGE: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _large_places() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    found = _LARGE.get(loop)
    if found is None:
        found = _LARGE[loop] = asyncio.Semaphore(LARGE_BODIES)
    return found


def _small_int(digits: str) -> int | None:
    """An integer of a JSON answer, or None when Python refuses to convert it."""
    return int(digits) if len(digits) <= 4000 else None


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
        # Polls are numbered (begin_poll); a login is attempted at most once per poll.
        self._poll = 0
        self._login_poll = -1
        self._login_lock = asyncio.Lock()  # one re-login when several requests get a 401
        self._poll_values = 0  # JSON values decoded in this poll
        # DELETEs of dropped sessions still running; close() waits for them.
        self._logouts: set[asyncio.Task[None]] = set()
        self.requests = 0  # HTTP requests sent, logins and logouts included
        self.logins = 0  # session logins attempted
        self.logouts = 0  # session DELETEs sent

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
    ) -> tuple[int, Mapping[str, str], bytes | bytearray]:
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
                    # Callers decode the answer with no await after this returns, so no
                    # other large answer is read between its place's release and then.
                    async with contextlib.AsyncExitStack() as large:
                        held = length is not None and length > LARGE_BODY
                        if held:
                            await large.enter_async_context(_large_places())
                        data = bytearray()
                        async for chunk in rsp.content.iter_chunked(65536):
                            data += chunk
                            if len(data) > MAX_BODY:
                                raise ProtocolError(
                                    f"{shown(path)}: answer is larger than "
                                    f"{MAX_BODY // (1024 * 1024)} MiB"
                                )
                            if not held and len(data) > LARGE_BODY:
                                await large.enter_async_context(_large_places())
                                held = True
                        # The buffer itself, not a bytes copy: json.loads reads a bytearray.
                        return rsp.status, rsp.headers, data
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

    def _decode(self, path: str, data: bytes | bytearray) -> JsonObject:
        # Counted before decoding: what the decoded objects would cost is known from the
        # text (see MAX_VALUES); strings holding commas or braces only overcount.
        values = data.count(b",") + data.count(b"{")
        if values > MAX_VALUES:
            raise ProtocolError(
                f"{shown(path)}: the answer holds more than {MAX_VALUES} values (~{values})"
            )
        self._poll_values += values
        if self._poll_values > MAX_POLL_VALUES:
            raise ProtocolError(
                f"{shown(path)}: this poll's answers hold more than {MAX_POLL_VALUES} values"
            )
        try:
            found = json.loads(data)
        except ValueError as exc:
            if "digits" not in str(exc):
                raise ProtocolError(f"{shown(path)}: the answer is not JSON") from None
            # An integer past Python's int_max_str_digits (4300) is valid JSON; it must cost
            # its property only (readings.number gives None for it), not the resource.
            found = self._decode_again(path, data)
        except RecursionError:
            raise ProtocolError(f"{shown(path)}: the answer is not JSON") from None
        if not isinstance(found, dict):
            raise ProtocolError(f"{shown(path)}: the answer is not a JSON object")
        return found

    @staticmethod
    def _decode_again(path: str, data: bytes | bytearray) -> object:
        try:
            return json.loads(data, parse_int=_small_int)
        except (ValueError, RecursionError):
            raise ProtocolError(f"{shown(path)}: the answer is not JSON") from None

    # -- the API ------------------------------------------------------------------------

    async def root(self) -> JsonObject:
        """The service root (unauthenticated in Redfish; sent with credentials when held)."""
        status, _, data = await self._send("GET", ROOT, headers=self._headers())
        if status != 200:
            raise ProtocolError(f"{ROOT}: HTTP {status}; is this a Redfish service?")
        return self._decode(ROOT, data)

    def begin_poll(self) -> None:
        """A poll starts: it may log in once, and its answers' values are counted afresh."""
        self._poll += 1
        self._poll_values = 0

    async def get(self, path: str) -> tuple[int, JsonObject | None]:
        """GET a resource: (200, object), or (status, None) for 404 and other refusals.

        A 401 with a session made in an earlier poll DELETEs it, logs in again and repeats
        the request; a 401 after that, with a session made in this poll or with basic auth,
        is an AuthError.
        """
        sent = self._token
        status, _, data = await self._send("GET", path, headers=self._headers())
        if status == 401 and sent is not None and await self._renew(sent):
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

    async def _renew(self, refused: str) -> bool:
        """After a 401 to the session token `refused`: whether the request may be repeated
        with new credentials. Several requests in flight may get the 401 at once; the first
        logs in again (at most once per poll), the others use its session."""
        async with self._login_lock:
            if self._token is not None and self._token != refused:
                return True  # another request has logged in again meanwhile
            if self._token is None or self._login_poll == self._poll:
                # The session was made in this poll (or this poll's login failed): a new
                # one would be refused alike, and every login is one more session on a
                # BMC that allows a handful.
                return False
            # The session expired (BMCs time them out after minutes) or the BMC restarted.
            self.drop()
            await self.login(self._sessions_uri)
            return self.authenticated

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
        self.drop()  # never two sessions of this client at once
        self._login_poll = self._poll
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

    def _session_location(self, headers: Mapping[str, str], data: bytes | bytearray) -> str | None:
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

    def drop(self) -> None:
        """Stop using the session (credentials refused, service replaced) and DELETE it in
        the background: a session left behind holds one of the BMC's few places until it
        times out, and enough of them lock the administrators out. close() waits for it."""
        path, token = self._session_path, self._token
        self._token = self._session_path = None
        self._basic = False
        if token is not None and path is not None:
            task = asyncio.create_task(self._delete(path, token), name=f"logout:{self._base}")
            self._logouts.add(task)
            task.add_done_callback(self._logouts.discard)

    async def _delete(self, path: str, token: str) -> None:
        """DELETE a session; errors are ignored (the BMC times it out anyway)."""
        self.logouts += 1
        with contextlib.suppress(DeviceError):
            await self._send(
                "DELETE", path, headers={"X-Auth-Token": token}, deadline=LOGOUT_TIMEOUT
            )

    async def logout(self) -> None:
        """DELETE the session, if there is one, and wait for every DELETE still running."""
        self.drop()
        if self._logouts:
            await asyncio.gather(*self._logouts, return_exceptions=True)

    async def close(self) -> None:
        """Log out and close the connections."""
        try:
            async with asyncio.timeout(LOGOUT_TIMEOUT + 1):
                await self.logout()
        except TimeoutError:
            pass
        for task in list(self._logouts):
            task.cancel()
        if self._http is not None:
            await self._http.close()
            self._http = None
