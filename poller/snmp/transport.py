"""SNMP transports: the seam the driver polls through (SnmpTransport) and its gufo-snmp
implementation (every version; SNMPv3 always), with the request loop both transports share."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from gufo.snmp import (
    Aes128Key,
    Aes192Key,
    Aes256Key,
    DesKey,
    Md5Key,
    NoSuchInstance,
    Sha1Key,
    Sha224Key,
    Sha256Key,
    Sha384Key,
    Sha512Key,
    SnmpAuthError,
    SnmpDecodeError,
    SnmpEncodeError,
    SnmpError,
    SnmpVersion,
    User,
)
from gufo.snmp._fast import GetIter
from gufo.snmp.aio.client import SnmpSession

from poller.errors import (
    AuthError,
    DeviceTimeoutError,
    ProtocolError,
    UnreachableError,
)
from poller.snmp.auth import SnmpAuth
from poller.snmp.profile import RawValue, oid_key

T = TypeVar("T")

# OIDs per GET request at first: one PDU for the scalars of most devices. An agent whose
# answer would not fit replies tooBig, which gufo-snmp surfaces as an empty answer: the
# chunk is then retried in halves and, if that helps, the smaller size kept for the target.
GET_CHUNK = 32
# Below this many OIDs an empty GET answer is believed rather than split further.
MIN_GET_SPLIT = 4
# A table with more rows than this is an agent bug (or a hostile device), not a sensor
# table; the limit is per table row, so a walk of C columns may return C times as many
# varbinds (a 10,000-row ENTITY-SENSOR table with 6 needed columns is 60,000).
MAX_TABLE_ROWS = 50_000
# Largest GETBULK sized from a table's rows at the last poll, unless the target fixes its own
# max_repetitions: ~50 varbinds of a sensor table stay well inside a 1,472-byte datagram
# for short values, and agents shorten a GETBULK answer that would not fit (RFC 3416 4.2.3).
BULK_CAP = 50
# SNMPv3 engine time must be refreshed when the session has been idle this long (RFC 3414
# allows 150 s of drift).
V3_REFRESH_AFTER = 120.0

_AUTH_KEYS = {
    "MD5": Md5Key,
    "SHA": Sha1Key,
    "SHA224": Sha224Key,
    "SHA256": Sha256Key,
    "SHA384": Sha384Key,
    "SHA512": Sha512Key,
}
_PRIV_KEYS = {"DES": DesKey, "AES": Aes128Key, "AES192": Aes192Key, "AES256": Aes256Key}


def _is_panic(exc: BaseException) -> bool:
    """True for pyo3's PanicException (its class lives in the pyo3_runtime module)."""
    return type(exc).__name__ == "PanicException"


class SnmpTransport(Protocol):
    """What the driver needs from an SNMP client; tests substitute a fake."""

    async def get_many(self, oids: Sequence[str]) -> dict[str, RawValue]:
        """GET the OIDs; missing ones (noSuchObject/noSuchInstance) are left out."""
        ...

    async def walk(
        self,
        oid: str,
        stop: str | None = None,
        columns: int = 1,
        max_repetitions: int | None = None,
    ) -> list[tuple[str, RawValue]]:
        """Every (oid, value) below `oid` in agent order, ending before `stop` if given;
        `columns` is how many table columns the range spans (for the row limit) and
        `max_repetitions` the GETBULK size to use (None: the target's)."""
        ...

    def close(self) -> None:
        """Drop the socket."""
        ...

    def lane(self, number: int) -> SnmpTransport:
        """A sibling transport on a socket of its own, for a request beside this one's
        (lane 0 is this transport); created on first use, closed with this one."""
        ...

    async def lands_in(self, subtree: str) -> bool:
        """Whether a GETNEXT of `subtree` answers with an OID inside it (one request)."""
        ...


def make_user(auth: SnmpAuth) -> User:
    """Build a gufo-snmp USM user from validated credentials."""
    level = auth.effective_security_level
    kwargs: dict[str, Any] = {}
    if level in ("authNoPriv", "authPriv") and auth.auth_protocol and auth.auth_password:
        key = auth.auth_password.get_secret_value().encode()
        kwargs["auth_key"] = _AUTH_KEYS[auth.auth_protocol](key)
    if level == "authPriv" and auth.priv_protocol and auth.priv_password:
        key = auth.priv_password.get_secret_value().encode()
        kwargs["priv_key"] = _PRIV_KEYS[auth.priv_protocol](key)
    return User(auth.username or "", **kwargs)


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class _Channel:
    """Requests and answers on one gufo-snmp session's socket, leaner than the library's own
    asyncio layer: no wait_for, one absolute deadline however many stray datagrams arrive,
    no per-value async iterator around a GETBULK's answer, and the socket stays registered
    with the event loop between requests (a poll's requests follow each other closely, and
    each registration is two epoll_ctl calls). gufo-snmp's Rust socket encodes, sends,
    receives and decodes. A poll is mostly this loop, so it is most of the CPU a poll costs.
    """

    __slots__ = ("_fd", "_loop", "_registered", "_resend", "_waiter", "owner", "requests")

    def __init__(
        self,
        fd: int,
        resend: Callable[[Callable[[], None]], Awaitable[None]],
        owner: object,
    ) -> None:
        self.owner = owner  # the session or socket the fd belongs to
        self._fd = fd
        self._resend = resend  # sends once the socket is writable
        self._waiter: asyncio.Future[None] | None = None
        self._registered = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.requests = 0  # PDUs sent on this socket (retries included)

    def _readable(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif waiter is None and self._loop is not None:
            # A datagram nobody waits for (a late answer): stop watching until the next
            # request, or the event loop would call this on every turn. It is read then.
            self._loop.remove_reader(self._fd)
            self._registered = False

    async def exchange(self, wait: float, send: Callable[[], None], recv: Callable[[], T]) -> T:
        """Send one request and return its decoded answer; TimeoutError after `wait` s."""
        self.requests += 1
        try:
            send()
        except BlockingIOError:  # the socket's send buffer is full: wait until writable
            await self._resend(send)
        loop = asyncio.get_running_loop()
        if not self._registered or self._loop is not loop:
            if self._registered and self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            loop.add_reader(self._fd, self._readable)
            self._loop, self._registered = loop, True
        deadline = loop.time() + wait
        try:
            while True:
                waiter = self._waiter = loop.create_future()
                timer = loop.call_at(deadline, _expire, waiter)
                try:
                    await waiter
                finally:
                    timer.cancel()
                try:
                    return recv()
                except BlockingIOError:  # a stray datagram, not the answer: wait on
                    if loop.time() >= deadline:
                        raise TimeoutError from None
        except BaseException:
            # Cancelled or failed: the socket may get the late answer, so stop watching.
            self.close()
            raise
        finally:
            self._waiter = None

    def close(self) -> None:
        """Stop watching the socket (the session closes it when dropped)."""
        if self._registered and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._registered = False


class GufoTransport:
    """SnmpTransport over gufo-snmp: one UDP socket per target, reused across polls."""

    def __init__(
        self,
        host: str,
        port: int,
        auth: SnmpAuth,
        request_timeout: float,
        retries: int,
        max_repetitions: int,
        semaphore: asyncio.Semaphore,
    ) -> None:
        self._host = host
        self._port = port
        self._auth = auth
        self._timeout = request_timeout
        self._retries = retries
        self._max_repetitions = max_repetitions
        self._semaphore = semaphore
        self._session: SnmpSession | None = None
        # When a request was last answered (monotonic); None: never, so engine discovery
        # runs before the first request. (0.0 looked recent on a host up for < 120 s.)
        self._last_used: float | None = None
        # OIDs per GET: shrinks when the agent cannot answer that many at once.
        self._chunk = GET_CHUNK
        self._absent: set[frozenset[str]] = set()
        # SNMPv3: whether an encrypted request was ever answered on this session.
        self._answered = False
        # Sibling transports for requests in flight beside this one's (max_inflight).
        self._lanes: dict[int, GufoTransport] = {}
        self._channel: _Channel | None = None
        self._requests_before = 0  # of channels replaced (a new session after an error)

    def _channel_for(self, session: SnmpSession) -> _Channel:
        channel = self._channel
        if channel is None or channel.owner is not session:
            if channel is not None:
                channel.close()
                self._requests_before += channel.requests
            channel = self._channel = _Channel(session._fd, session._send, session)
        return channel

    @property
    def requests(self) -> int:
        """PDUs sent so far on this transport and its lanes (retries included; the
        library's own SNMPv3 engine discovery not counted)."""
        own = self._requests_before + (self._channel.requests if self._channel else 0)
        return own + sum(lane.requests for lane in self._lanes.values())

    def lane(self, number: int) -> SnmpTransport:
        """A sibling transport with its own socket: gufo-snmp matches an answer to the last
        request sent on a socket, so two requests in flight need two sockets."""
        if number == 0:
            return self
        found = self._lanes.get(number)
        if found is None:
            found = self._lanes[number] = type(self)(
                self._host,
                self._port,
                self._auth,
                self._timeout,
                self._retries,
                self._max_repetitions,
                self._semaphore,
            )
            found._chunk = self._chunk
        return found

    async def _resolve(self) -> str:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                self._host, self._port, type=socket.SOCK_DGRAM
            )
        except OSError as exc:
            raise UnreachableError(f"cannot resolve {self._host}: {exc.strerror}") from None
        return str(infos[0][4][0])

    async def _ensure_session(self) -> SnmpSession:
        if self._session is not None and not (
            self._auth.version == "3"
            and (self._last_used is None or time.monotonic() - self._last_used > V3_REFRESH_AFTER)
        ):
            return self._session
        if self._session is None:
            addr = await self._resolve()
            version = {"1": SnmpVersion.v1, "2c": SnmpVersion.v2c, "3": SnmpVersion.v3}
            kwargs: dict[str, Any] = {}
            if self._auth.version == "3":
                kwargs["user"] = make_user(self._auth)
            elif self._auth.community is not None:
                kwargs["community"] = self._auth.community.get_secret_value()
            try:
                self._session = SnmpSession(
                    addr,
                    self._port,
                    version=version[self._auth.version],
                    timeout=self._timeout,
                    max_repetitions=self._max_repetitions,
                    **kwargs,
                )
            except OSError as exc:
                raise UnreachableError(f"cannot open socket: {exc.strerror}") from None
        session = self._session
        # SNMPv3: discover the engine id and time, and refresh it after idling. That uses
        # the library's own asyncio layer, which registers the socket itself: unwatch it here.
        if self._channel is not None:
            self._channel.close()
        await self._call(session.refresh)
        return session

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run one request with retries on timeout, mapping library errors to DeviceErrors."""
        attempts = self._retries + 1
        for attempt in range(attempts):
            try:
                async with self._semaphore:
                    result = await op()
                self._last_used = time.monotonic()
                self._answered = True
                return result
            except TimeoutError:
                if attempt + 1 == attempts:
                    self._explain_v3_silence()
                    hint = " (wrong community?)" if self._auth.version != "3" else ""
                    raise DeviceTimeoutError(
                        f"no answer within {self._timeout:.1f}s x {attempts}{hint}"
                    ) from None
            except SnmpAuthError as exc:
                self.close()
                raise AuthError(f"SNMPv3 authentication failed: {exc}") from None
            except (SnmpDecodeError, SnmpEncodeError) as exc:
                raise ProtocolError(f"undecodable SNMP message: {exc}") from None
            except NoSuchInstance:
                raise
            except SnmpError as exc:
                raise ProtocolError(f"SNMP error: {exc}") from None
            except OSError as exc:
                self.close()
                raise UnreachableError(f"network error: {exc.strerror or exc}") from None
            except BaseException as exc:
                # gufo-snmp's Rust decoder can panic on a malformed reply (e.g. the two
                # bytes 30 82); pyo3 raises PanicException, a BaseException that
                # `except Exception` misses. Any host that can send UDP here can trigger
                # it, so it is a protocol error of this target, never the end of its task.
                if not _is_panic(exc):
                    raise
                self.close()
                raise ProtocolError("undecodable SNMP message (decoder panic)") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _explain_v3_silence(self) -> None:
        """Agents drop requests they cannot decrypt, as they drop a wrong community. When
        engine discovery (unencrypted) was answered but no encrypted request ever was, the
        privacy password (or protocol) is the likely cause: say so instead of "timeout".
        """
        if (
            self._auth.version == "3"
            and self._auth.effective_security_level == "authPriv"
            and not self._answered
            and self._session is not None
            and self._session.get_engine_id()
        ):
            self.close()
            raise AuthError(
                "the agent answers SNMPv3 discovery but not encrypted requests: "
                "wrong priv_password or priv_protocol?"
            )

    async def get_many(self, oids: Sequence[str]) -> dict[str, RawValue]:
        """GET in chunks; on SNMPv1 a PDU with one missing OID fails whole, so split it."""
        session = await self._ensure_session()
        out: dict[str, RawValue] = {}
        size = self._chunk
        for start in range(0, len(oids), size):
            chunk = list(oids[start : start + size])
            got = await self._get_chunk(session, chunk)
            out.update(got)
            if self._auth.version == "1" and len(got) < len(chunk):
                for oid in chunk:
                    if oid not in got:
                        with contextlib.suppress(NoSuchInstance):
                            out[oid] = await self._get_one(session, oid)
        return out

    async def _get_one(self, session: SnmpSession, oid: str) -> RawValue:
        """GET one OID (SNMPv1, where one missing OID fails a whole PDU)."""
        sock, channel = session._sock, self._channel_for(session)
        value: RawValue = await self._call(
            lambda: channel.exchange(self._timeout, lambda: sock.send_get(oid), sock.recv_get)
        )
        return value

    async def _get_chunk(self, session: SnmpSession, chunk: list[str]) -> dict[str, RawValue]:
        """One GET; an empty answer to several OIDs may be tooBig (gufo-snmp drops the
        error-status), so it is asked again in halves, and a size that works is kept.
        A set found truly absent is remembered, so it costs one request next time."""
        sock, timeout, channel = session._sock, self._timeout, self._channel_for(session)
        got: dict[str, RawValue] = await self._call(
            lambda: channel.exchange(timeout, lambda: sock.send_get_many(chunk), sock.recv_get_many)
        )
        key = frozenset(chunk)
        if got or len(chunk) <= MIN_GET_SPLIT or key in self._absent:
            return got
        half = len(chunk) // 2
        first = await self._get_chunk(session, chunk[:half])
        second = await self._get_chunk(session, chunk[half:])
        if first or second:
            self._chunk = min(self._chunk, half)
        else:
            self._absent.add(key)
        return {**first, **second}

    async def walk(
        self,
        oid: str,
        stop: str | None = None,
        columns: int = 1,
        max_repetitions: int | None = None,
    ) -> list[tuple[str, RawValue]]:
        """GETBULK (GETNEXT on v1) below `oid`, ending before `stop`; guards against agents
        that loop, and against tables of more than MAX_TABLE_ROWS rows of `columns`."""
        session = await self._ensure_session()
        limit = MAX_TABLE_ROWS * max(1, columns)
        # Walking a table entry up to column N: the column number is the first arc after
        # the entry, so one int() per row decides where to stop (no tuple of every arc).
        stop_column: int | None = None
        stop_key: tuple[int, ...] | None = None
        if stop is not None:
            parent, _, last = stop.rpartition(".")
            if parent == oid:
                stop_column = int(last)
            else:
                stop_key = oid_key(stop)
        prefix = oid + "."
        cut = len(prefix)
        bulk = max_repetitions or self._max_repetitions

        sock, timeout, v1 = session._sock, self._timeout, self._auth.version == "1"
        channel = self._channel_for(session)

        async def run() -> list[tuple[str, RawValue]]:
            rows: list[tuple[str, RawValue]] = []
            seen: set[str] = set()
            column, in_column = -1, 0
            ctx = GetIter(oid) if v1 else GetIter(oid, bulk)
            send: Callable[[], None] = (
                (lambda: sock.send_get_next(ctx)) if v1 else (lambda: sock.send_get_bulk(ctx))
            )
            recv: Callable[[], list[tuple[str, RawValue] | None]] = (
                (lambda: [sock.recv_get_next(ctx)]) if v1 else (lambda: sock.recv_get_bulk(ctx))
            )
            while True:
                try:
                    batch = await channel.exchange(timeout, send, recv)
                except StopAsyncIteration:  # GETNEXT past the subtree (SNMPv1)
                    return rows
                if not batch:
                    return rows
                for item in batch:
                    if item is None:  # the end of the subtree
                        return rows
                    row_oid, value = item
                    if not row_oid.startswith(prefix):
                        # A GETNEXT answered with the very OID asked (or one above it): the
                        # walk would never advance.
                        raise ProtocolError(
                            f"agent returned {row_oid}, not below {oid}: walk stuck"
                        )
                    if stop_column is not None:
                        number = int(row_oid[cut:].partition(".")[0])
                        if number >= stop_column:
                            return rows
                        if number != column:  # rows are counted per column
                            column, in_column = number, 0
                    elif stop_key is not None and oid_key(row_oid) >= stop_key:
                        return rows
                    # An agent whose walk does not advance answers an OID it already gave.
                    if row_oid in seen:
                        raise ProtocolError(f"agent returned {row_oid} twice: walk stuck")
                    seen.add(row_oid)
                    rows.append((row_oid, value))
                    in_column += 1
                    if in_column > MAX_TABLE_ROWS or len(rows) > limit:
                        raise ProtocolError(f"table {oid} has more than {MAX_TABLE_ROWS} rows")

        try:
            return await self._call(run)
        except NoSuchInstance:
            return []

    async def lands_in(self, subtree: str) -> bool:
        """One GETNEXT (GETBULK of one on v2c/v3) of `subtree`: does the agent have
        anything below it? gufo's iterators stop at the subtree's end, so an empty first
        step means no."""
        session = await self._ensure_session()

        sock, channel, v1 = session._sock, self._channel_for(session), self._auth.version == "1"

        async def step() -> bool:
            ctx = GetIter(subtree) if v1 else GetIter(subtree, 1)
            got: list[tuple[str, RawValue] | None]
            try:
                if v1:
                    got = [
                        await channel.exchange(
                            self._timeout,
                            lambda: sock.send_get_next(ctx),
                            lambda: sock.recv_get_next(ctx),
                        )
                    ]
                else:
                    got = await channel.exchange(
                        self._timeout,
                        lambda: sock.send_get_bulk(ctx),
                        lambda: sock.recv_get_bulk(ctx),
                    )
            except StopAsyncIteration:  # GETNEXT past the subtree (SNMPv1)
                return False
            first = got[0] if got else None
            return first is not None and first[0].startswith(subtree + ".")

        try:
            return await self._call(step)
        except NoSuchInstance:
            return False

    def close(self) -> None:
        """Forget the session (and the lanes'); the sockets close with them."""
        if self._channel is not None:
            self._channel.close()
            self._requests_before += self._channel.requests
            self._channel = None
        self._session = None
        self._answered = False
        for lane in self._lanes.values():
            lane.close()
            self._requests_before += lane.requests
        self._lanes.clear()
