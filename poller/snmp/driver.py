"""SNMP driver: gufo-snmp asyncio client behind a small transport seam, plus profile matching."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
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

from poller.compose import Contribution, merge
from poller.driver import DriverContext, PollSpec
from poller.errors import (
    AuthError,
    DeviceError,
    DeviceTimeoutError,
    ProtocolError,
    UnreachableError,
    UnsupportedError,
)
from poller.model import DeviceData
from poller.snmp import SnmpResource
from poller.snmp.auth import SnmpAuth, SnmpOptions
from poller.snmp.evaluate import Fetched, normalize, text
from poller.snmp.profile import SYS_DESCR, SYS_OBJECT_ID, Profile, RawValue, oid_key
from poller.snmp.profile import candidates as profile_candidates

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

    __slots__ = ("_fd", "_loop", "_registered", "_session", "_waiter", "requests")

    def __init__(self, session: SnmpSession) -> None:
        self._session = session
        self._fd = session._fd
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
            await self._session._send(send)
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
        if channel is None or channel._session is not session:
            if channel is not None:
                channel.close()
                self._requests_before += channel.requests
            channel = self._channel = _Channel(session)
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
            found = self._lanes[number] = GufoTransport(
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


class SnmpDriver:
    """Polls one SNMP target: detects its profile once, then GETs scalars and walks columns."""

    def __init__(
        self,
        spec: PollSpec,
        context: DriverContext,
        transport: SnmpTransport | None = None,
    ) -> None:
        assert isinstance(spec.auth, SnmpAuth)  # noqa: S101 - config cross-check guarantees it
        assert isinstance(spec.options, SnmpOptions)  # noqa: S101 - the registry builds it
        self._spec = spec
        self._auth = spec.auth
        self._options = options = spec.options
        self._profiles = context.profiles
        # Per-request timeout: the retries of one request fit in 80 % of the poll's deadline,
        # so that the driver, not the deadline, reports why a device stays silent.
        request_timeout = max(0.2, min(10.0, 0.8 * spec.timeout / (spec.retries + 1)))
        self._transport = transport or GufoTransport(
            spec.host,
            spec.port,
            spec.auth,
            request_timeout,
            spec.retries,
            options.max_repetitions,
            context.resource("snmp", SnmpResource).semaphore,
        )
        self._applied: list[Profile] | None = (
            [self._profiles.typed(spec.profile, Profile)] if spec.profile is not None else None
        )
        self._sys_object_id: str | None = None
        # Rows each table had at the last poll, to pick the cheaper way to walk it, and the
        # varbinds a walk of its entry returned (columns in range that are not needed can
        # have more rows than the needed ones).
        self._rows: dict[str, int] = {}
        self._varbinds: dict[str, int] = {}
        # PDUs the last detection cost, and the last poll (detection included), as reported
        # by `probe` and the benchmarks; None when the transport does not count them.
        self.detection_requests = 0
        self.requests_last_poll: int | None = None
        self._plan: _Plan | None = None
        # Largest GETBULK a walk sized from last poll's rows may ask for: the target's own
        # max_repetitions when it sets one (fragile cards), otherwise BULK_CAP.
        self._bulk_cap = (
            options.max_repetitions
            if options.max_repetitions_fixed
            else max(options.max_repetitions, BULK_CAP)
        )

    @property
    def profile(self) -> Profile | None:
        """The primary profile in use (configured or detected), if known yet."""
        return self._applied[0] if self._applied else None

    @property
    def applied(self) -> tuple[Profile, ...]:
        """Every profile applied to the device, best first (empty before detection)."""
        return tuple(self._applied or ())

    async def detect(self) -> list[Profile]:
        """Every profile whose match holds: identity from sysObjectID/sysDescr, presence
        from one GET of all `oid_exists` objects and one GETNEXT per `subtree`."""
        got = await self._transport.get_many([SYS_DESCR, SYS_OBJECT_ID])
        requests = 1
        sys_object_id = text(got.get(SYS_OBJECT_ID)).lstrip(".")
        sys_descr = text(got.get(SYS_DESCR))
        candidates = profile_candidates(self._profiles, sys_object_id, sys_descr)
        self._sys_object_id = sys_object_id
        exists = sorted({o for c in candidates for o in c.spec.match.oid_exists}, key=oid_key)
        present: set[str] = set()
        if exists:
            answered = await self._transport.get_many(exists)
            requests += (len(exists) + GET_CHUNK - 1) // GET_CHUNK
            present |= {o for o in exists if answered.get(o) is not None}
        for subtree in sorted({o for c in candidates for o in c.spec.match.subtree}, key=oid_key):
            requests += 1
            if await self._transport.lands_in(subtree):
                present.add(subtree)
        self.detection_requests = requests
        applied = [c for c in candidates if _present(c, present)]
        # A profile recognised by identity alone says what the device *is*: only the most
        # specific one applies. Profiles with a presence test are MIBs it speaks: all apply.
        models = [p for p in applied if not p.spec.match.has_presence]
        applied = [p for p in applied if p.spec.match.has_presence or p is models[0]]
        # A profile another applied one already includes adds nothing but duplicates.
        covered = {name for p in applied for name in p.included}
        applied = [p for p in applied if p.name not in covered]
        if not applied:
            shown = sys_object_id or "(none)"
            probes = len(exists) + len({o for c in candidates for o in c.spec.match.subtree})
            raise UnsupportedError(
                f"no profile matches sysObjectID {shown} ({sys_descr[:80]!r}); "
                f"it answered none of {probes} MIB probes of {len(candidates)} candidate "
                "profiles"
            )
        return applied

    async def poll(self) -> DeviceData:
        """Read the device once and normalise it through every applied profile."""
        counted = getattr(self._transport, "requests", None)
        try:
            return await self._poll()
        finally:
            after = getattr(self._transport, "requests", None)
            if isinstance(counted, int) and isinstance(after, int):
                self.requests_last_poll = after - counted

    async def _poll(self) -> DeviceData:
        if self._applied is None:
            self._applied = await self.detect()
            self._plan = None
        applied = self._applied
        if self._plan is None:
            self._plan = _Plan.of(applied)
        plan = self._plan
        oids = list(plan.scalars)
        detected = self._spec.profile is None
        if detected:
            oids.append(SYS_OBJECT_ID)  # one extra varbind tells us if the device was swapped
        fetched = Fetched(scalars=await self._transport.get_many(oids) if oids else {})
        if detected and SYS_OBJECT_ID in fetched.scalars:
            now = text(fetched.scalars[SYS_OBJECT_ID]).lstrip(".")
            if now != self._sys_object_id:
                self._applied = None  # re-detect on the next poll
        await self._walk_all(self._plan_walks(plan), fetched)
        version = {"1": "snmpv1", "2c": "snmpv2c", "3": "snmpv3"}[self._auth.version]
        parts = [
            Contribution(
                profile=p.name,
                fallback=p.spec.match.fallback,
                supersedes=frozenset(p.spec.supersedes),
                data=normalize(p, fetched),
            )
            for p in applied
        ]
        return merge(parts, protocol=version)

    async def _walk_all(self, walks: list[_Walk], fetched: Fetched) -> None:
        """Run the walks, up to max_inflight at once (each on its own socket), filing the
        rows in `fetched`. A table that fails costs only the readings that need it; two
        timeouts with no table answered in between mean the device is gone."""
        if not walks:
            return
        queue = list(reversed(walks))
        state = {"timeouts": 0}
        gone: list[DeviceTimeoutError] = []

        async def worker(transport: SnmpTransport) -> None:
            while queue and not gone:
                walk = queue.pop()
                try:
                    rows = await transport.walk(walk.oid, walk.stop, walk.span, walk.bulk)
                except DeviceTimeoutError as exc:
                    state["timeouts"] += 1
                    if state["timeouts"] >= 2:
                        gone.append(exc)
                        return
                    fetched.failed.update(dict.fromkeys(walk.columns, f"walk {walk.oid}: {exc}"))
                    continue
                except DeviceError as exc:
                    fetched.failed.update(dict.fromkeys(walk.columns, f"walk {walk.oid}: {exc}"))
                    continue
                state["timeouts"] = 0
                self._rows[walk.entry] = _distribute(walk, rows, fetched.columns)
                if walk.stop is not None:
                    self._varbinds[walk.entry] = len(rows)

        lanes = min(self._options.max_inflight, len(walks))
        if lanes == 1:
            await worker(self._transport)
        else:
            async with asyncio.TaskGroup() as group:
                for number in range(lanes):
                    group.create_task(worker(self._transport.lane(number)))
        if gone:
            raise gone[0]

    def _plan_walks(self, plan: _Plan) -> list[_Walk]:
        """How to read every table the applied profiles need, given last poll's rows.

        Round trips dominate the cost (an APC card answers in ~300 ms), so each table is read
        the cheaper way given the rows it had last time: one walk per needed column, or one
        walk of the whole entry up to the last needed column; and each GETBULK asks for as
        many repetitions as last poll's rows need (up to the cap), so a small table costs
        one request. A wide table with many rows and few needed columns is walked by
        column; a short one, by entry. Unknown tables start at the target's max_repetitions.
        """
        out: list[_Walk] = []
        cap = self._bulk_cap
        for entry, columns, last in plan.tables:
            known = self._rows.get(entry)
            rows = 1 if known is None else known
            by_column = len(columns) * (rows // cap + 1)
            whole = (rows * last) // cap + 1
            # A table never seen may be long: walking its entry reads every column up to the
            # last needed one, so do that only when the needed ones are most of that range.
            sparse = known is None and 2 * len(columns) < last
            if len(columns) > 1 and whole < by_column and not sparse:
                bulk = self._bulk(known, max(rows * last, self._varbinds.get(entry, 0)) + 1)
                out.append(_Walk(entry, entry, f"{entry}.{last + 1}", last, columns, bulk))
            else:
                bulk = self._bulk(known, rows + 1)
                out.extend(_Walk(entry, c, None, 1, (c,), bulk) for c in columns)
        return out

    def _bulk(self, known_rows: int | None, needed: int) -> int:
        """GETBULK size: what last poll's rows need, within [1, cap]; the target's
        max_repetitions for a table never seen."""
        if known_rows is None:
            return self._options.max_repetitions
        return max(1, min(needed, self._bulk_cap))

    async def close(self) -> None:
        """Close the transport's socket."""
        self._transport.close()


def _present(profile: Profile, present: set[str]) -> bool:
    """Whether a candidate's presence test (if it has one) passed."""
    match = profile.spec.match
    if not match.has_presence:
        return True
    return any(o in present for o in (*match.oid_exists, *match.subtree))


@dataclass(frozen=True, slots=True)
class _Walk:
    """One walk of a poll: `oid` (an entry or a column) up to `stop`, yielding `columns`."""

    entry: str
    oid: str
    stop: str | None
    span: int  # table columns the range covers (row limit)
    columns: tuple[str, ...]
    bulk: int


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the applied profiles need each poll, computed once per detection."""

    scalars: tuple[str, ...]
    # (entry OID, needed column OIDs, last needed column number), in OID order
    tables: tuple[tuple[str, tuple[str, ...], int], ...]

    @classmethod
    def of(cls, applied: Sequence[Profile]) -> _Plan:
        """Union of every applied profile's scalars and columns, each fetched once."""
        scalars = sorted({o for p in applied for o in p.scalar_oids}, key=oid_key)
        by_entry: dict[str, list[str]] = {}
        for column in sorted({c for p in applied for c in p.column_oids}, key=oid_key):
            by_entry.setdefault(column.rpartition(".")[0], []).append(column)
        tables = tuple(
            (entry, tuple(cols), max(int(c.rpartition(".")[2]) for c in cols))
            for entry, cols in by_entry.items()
        )
        return cls(tuple(scalars), tables)


def _distribute(
    walk: _Walk, rows: list[tuple[str, RawValue]], out: dict[str, dict[str, RawValue]]
) -> int:
    """File a walk's varbinds under their column OIDs by row index, in one pass; return the
    number of rows (the most any needed column had)."""
    wanted = {c: out.setdefault(c, {}) for c in walk.columns}
    if walk.stop is None:
        column = walk.columns[0]
        cut = len(column) + 1
        target = wanted[column]
        for oid, value in rows:
            target[oid[cut:]] = value
    else:
        cut = len(walk.entry) + 1
        by_number = {c.rpartition(".")[2]: d for c, d in wanted.items()}
        for oid, value in rows:
            number, _, index = oid[cut:].partition(".")
            got = by_number.get(number)
            if got is not None:
                got[index] = value
    return max((len(v) for v in wanted.values()), default=0)
