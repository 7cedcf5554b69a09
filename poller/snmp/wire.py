"""SNMPv2c on the project's own codec (poller.snmp.ber): every needed column of every table
in one GETBULK, many requests in flight on one socket.

gufo-snmp's GETBULK carries one OID, so ten columns cost ten walks, and it matches an answer
to the last request sent on its socket, so two requests in flight need two sockets. Here a
request carries as many varbinds as the agent allows, answers are matched by request-id
(one socket per target however many are in flight) and a late answer to an earlier attempt
of the same request is taken. SNMPv1 and SNMPv3 stay on gufo-snmp (poller.snmp.transport).

Hostile or broken answers cost one bounded decode and a DeviceError of this target: a
datagram that does not parse fails the requests in flight with ProtocolError; a walk that
repeats a row, or a table longer than MAX_TABLE_ROWS, fails that column only.
"""

from __future__ import annotations

import asyncio
import operator
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from poller.errors import (
    AuthError,
    DeviceError,
    DeviceTimeoutError,
    ProtocolError,
    UnreachableError,
)
from poller.snmp.auth import SnmpAuth
from poller.snmp.ber import (
    AUTHORIZATION_ERROR,
    GET,
    GETBULK,
    TAG_END_OF_MIB_VIEW,
    TOO_BIG,
    MalformedError,
    Varbind,
    index_text,
    null_varbinds,
    oid_contents,
    oid_less,
    oid_text,
    parse_oid,
    parse_response,
    request,
)
from poller.snmp.profile import RawValue, oid_key
from poller.snmp.transport import GET_CHUNK, MAX_TABLE_ROWS, SnmpTransport

V2C = 1  # the version field of an SNMPv2c message
# Datagrams read per wake-up of the socket: a flood from one device cannot hold the loop.
READ_BURST = 64
# A row index's text by its encoded arcs, shared by all targets (indexes repeat: 1, 2, ...).
_INDEXES: dict[bytes, str] = {}
_INDEXES_MAX = 1 << 16
# Encoded OIDs by their text, shared by all targets (profiles name the same objects).
_CONTENTS: dict[str, bytes] = {}
_CONTENTS_MAX = 1 << 16
# Names of SNMPv2 error-status values (RFC 3416), for messages.
_STATUS = {
    1: "tooBig",
    2: "noSuchName",
    3: "badValue",
    4: "readOnly",
    5: "genErr",
    6: "noAccess",
    16: "authorizationError",
}

Answer = tuple[int, int, int, list[Varbind]]  # request-id, error-status, error-index, varbinds


def contents(oid: str) -> bytes:
    """The BER contents of a dotted OID (cached)."""
    got = _CONTENTS.get(oid)
    if got is None:
        got = oid_contents(parse_oid(oid))
        if len(_CONTENTS) >= _CONTENTS_MAX:
            _CONTENTS.clear()
        _CONTENTS[oid] = got
    return got


# A varbind asking for an OID (its name and a NULL), by the OID's contents: a walk asks for
# the rows it was given last poll, so these repeat.
_ASKS: dict[bytes, bytes] = {}


def _asks(names: list[bytes]) -> bytes:
    """A varbind list's contents asking for `names` (OID contents), from the cache."""
    out = []
    for name in names:
        got = _ASKS.get(name)
        if got is None:
            got = null_varbinds([name])
            if len(_ASKS) >= _INDEXES_MAX:
                _ASKS.clear()
            _ASKS[name] = got
        out.append(got)
    return b"".join(out)


def _index(suffix: bytes) -> str:
    got = _INDEXES.get(suffix)
    if got is None:
        got = index_text(suffix)
        if len(_INDEXES) >= _INDEXES_MAX:
            _INDEXES.clear()
        _INDEXES[suffix] = got
    return got


def _after(name: bytes, asked: bytes) -> bool:
    """Whether OID contents `name` sort after `asked` (see _file on bytes order)."""
    return name > asked or _arcs_after(name, asked)


def _arcs_after(name: bytes, asked: bytes) -> bool:
    try:
        return oid_less(asked, name)
    except MalformedError:
        return False


def _shown(name: bytes) -> str:
    try:
        return oid_text(name)
    except MalformedError:
        return "(an undecodable OID)"


def _status(status: int) -> str:
    return _STATUS.get(status, f"error-status {status}")


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


def _expire(waiter: asyncio.Future[Answer]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


# What a column walk reads: a column OID, or (entry OID, first, last column number) for a
# walk of a table entry from its first to its last needed column, filed as "column.index".
WalkSpec = str | tuple[str, int, int]


class _Column:
    """One column (or table entry range) of a column walk: where it is, what it read. Kept
    from poll to poll (the transport's walk of the same columns), started afresh by
    `start`."""

    __slots__ = ("begin", "cut", "done", "error", "last", "need", "oid", "prefix", "rows", "stop")

    def __init__(self, spec: WalkSpec) -> None:
        if isinstance(spec, str):
            self.oid, self.stop = spec, 0
            self.prefix = self.begin = contents(spec)
        else:
            entry, first, last = spec
            self.oid, self.stop = entry, last  # past column `last` is the walk's end
            self.prefix = contents(entry)
            self.begin = contents(f"{entry}.{first}")  # a GETNEXT of it: column first, row 1
        self.cut = len(self.prefix)
        self.start(None, 1)

    def start(self, expected: int | None, first_need: int) -> None:
        """Ready for a walk from the column's start; `expected`: its varbinds at the last
        poll (rows, for a column)."""
        self.last = self.begin  # the next GETBULK asks for what follows this
        self.rows: dict[str, RawValue] = {}
        self.done = False
        self.error: str | None = None
        # Varbinds wanted from the next answer: last poll's rows and one to see the end.
        self.need = first_need if expected is None else expected + 1


_NEED = operator.attrgetter("need")
_RELEASED: dict[str, RawValue] = {}  # a kept column's rows between polls (never written)


class _Riders:
    """Scalars asked as the non-repeaters of a walk's GETBULK, so that they cost no GET of
    their own. Each is a GETNEXT of the OID just before it (x for x.0, x.4 for x.5): the
    answer is the scalar itself when the agent has it, and an OID after it when not. An
    answer before it (x.4.1 for x.5) settles nothing: that scalar is asked with a GET."""

    __slots__ = ("asks", "done", "names", "oids", "values")

    def __init__(self, oids: tuple[str, ...], asks: bytes, names: list[bytes]) -> None:
        self.oids = oids
        self.asks = asks  # the varbinds asking for them
        self.names = names  # each scalar's own OID, as the answer names it
        self.done = [False] * len(oids)
        self.values: dict[str, RawValue] = {}

    def settle(self, answer: Sequence[Varbind]) -> None:
        """Take the non-repeaters' answers (the first len(oids) varbinds)."""
        for position, (name, tag, value) in enumerate(answer[: len(self.oids)]):
            expected = self.names[position]
            if name == expected:
                if tag != TAG_END_OF_MIB_VIEW and value is not None:
                    self.values[self.oids[position]] = value
                self.done[position] = True
            elif tag == TAG_END_OF_MIB_VIEW or _arcs_after(name, expected):
                self.done[position] = True  # nothing at that OID: absent, as a GET says

    @property
    def left(self) -> list[str]:
        """The scalars no answer settled (the GETBULK failed, or the answer was short)."""
        return [oid for oid, done in zip(self.oids, self.done, strict=True) if not done]


def _before(oid: str) -> str:
    """The OID whose GETNEXT answers `oid` when the agent has it: x for x.0, x.4 for x.5."""
    head, _, last = oid.rpartition(".")
    number = int(last)
    return head if number == 0 else f"{head}.{number - 1}"


class WireTransport:
    """SnmpTransport for SNMPv2c: one non-blocking UDP socket per target, requests matched
    to answers by request-id, so `lane` is the transport itself."""

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
        secret = auth.community.get_secret_value() if auth.community is not None else "public"
        self._community = secret.encode()
        self._timeout = request_timeout
        self._retries = retries
        self._max_repetitions = max_repetitions
        self._semaphore = semaphore
        self._sock: socket.socket | None = None
        self._addr: tuple[Any, ...] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._registered = False
        self._pending: dict[int, asyncio.Future[Answer]] = {}
        # Request ids start at a random point so that a restarted poller does not take the
        # late answers of its predecessor's requests.
        self._next_id = int.from_bytes(os.urandom(4), "big") & 0x3FFFFFFF
        self._chunk = GET_CHUNK  # OIDs per GET; shrinks when the agent answers tooBig
        # Varbinds per GETBULK answer this agent managed (tooBig shrinks it).
        self._bulk_limit: int | None = None
        # OIDs a v1-style agent failed a whole GET over (error-index): asked no more.
        self._refused: set[str] = set()
        self._requests: dict[tuple[str, ...], tuple[bytes, list[bytes]]] = {}  # GET chunks
        self._riders: dict[tuple[str, ...], tuple[bytes, list[bytes]]] = {}  # the same, riding
        # Whether the agent honours GETBULK's non-repeaters (asked once): None until known.
        self._riding: bool | None = None
        # The last column walk's columns and their state objects, reused by the next.
        self._kept: tuple[tuple[WalkSpec, ...], list[_Column]] | None = None
        self.requests = 0  # PDUs sent (retries included)

    # --- the socket ------------------------------------------------------------------

    async def _open(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise UnreachableError(f"cannot resolve {self._host}: {exc.strerror}") from None
        if self._sock is not None:  # a request beside this one opened it meanwhile
            return self._sock
        family, _, _, _, addr = infos[0]
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:
            raise UnreachableError(f"cannot open socket: {exc.strerror}") from None
        sock.setblocking(False)
        self._sock, self._addr = sock, addr
        return sock

    def _watch(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        if self._registered and self._loop is loop:
            return
        if self._registered and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
        loop.add_reader(sock.fileno(), self._readable)
        self._loop, self._registered = loop, True

    def _unwatch(self) -> None:
        loop = self._loop
        if (
            self._registered
            and self._sock is not None
            and loop is not None
            and not loop.is_closed()
        ):
            loop.remove_reader(self._sock.fileno())
        self._registered = False

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        if not self._pending:
            # Nobody waits (a late answer): stop watching until the next request, which
            # reads and drops it, or the event loop would call this on every turn.
            self._unwatch()
            return
        for _ in range(READ_BURST):
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                return
            except OSError as exc:
                self._fail(UnreachableError(f"network error: {exc.strerror or exc}"))
                return
            try:
                answer = parse_response(data, V2C) if data else None
            except MalformedError as exc:
                self._fail(ProtocolError(f"undecodable SNMP message: {exc}"))
                continue
            if answer is not None:
                waiter = self._pending.get(answer[0])
                if waiter is not None and not waiter.done():
                    waiter.set_result(answer)

    def _fail(self, exc: DeviceError) -> None:
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(exc)

    async def _send(self, sock: socket.socket, data: bytes) -> None:
        assert self._addr is not None  # noqa: S101 - set with the socket
        try:
            sock.sendto(data, self._addr)
            return
        except BlockingIOError:
            pass
        except OSError as exc:
            raise UnreachableError(f"network error: {exc.strerror or exc}") from None
        # The send buffer is full (thousands of requests at once): wait until writable.
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_writer(sock.fileno(), _wake, ready)
        try:
            await ready
        finally:
            loop.remove_writer(sock.fileno())
        try:
            sock.sendto(data, self._addr)
        except OSError as exc:
            raise UnreachableError(f"network error: {exc.strerror or exc}") from None

    async def _exchange(self, pdu_type: int, a: int, b: int, varbinds: bytes) -> Answer:
        """Send one request (again on timeout, with the same request-id, so a late answer
        to an earlier attempt counts) and return its answer."""
        sock = self._sock or await self._open()
        loop = asyncio.get_running_loop()
        self._watch(loop, sock)
        rid = self._next_id = (self._next_id % 0x7FFFFFFF) + 1
        data = request(V2C, self._community, pdu_type, rid, a, b, varbinds)
        attempts = self._retries + 1
        try:
            for _ in range(attempts):
                async with self._semaphore:
                    waiter: asyncio.Future[Answer] = loop.create_future()
                    self._pending[rid] = waiter
                    self.requests += 1
                    await self._send(sock, data)
                    if not self._registered:  # unwatched while the send waited
                        self._watch(loop, sock)
                    timer = loop.call_later(self._timeout, _expire, waiter)
                    try:
                        return await waiter
                    except TimeoutError:
                        continue
                    finally:
                        timer.cancel()
        finally:
            self._pending.pop(rid, None)
        raise DeviceTimeoutError(
            f"no answer within {self._timeout:.1f}s x {attempts} (wrong community?)"
        )

    # --- SnmpTransport ---------------------------------------------------------------

    async def get_many(self, oids: Sequence[str]) -> dict[str, RawValue]:
        """GET in chunks of up to GET_CHUNK OIDs (fewer once the agent said tooBig)."""
        out: dict[str, RawValue] = {}
        wanted = [o for o in oids if o not in self._refused] if self._refused else oids
        size = self._chunk
        for start in range(0, len(wanted), size):
            await self._get(tuple(wanted[start : start + size]), out)
        return out

    async def _get(self, chunk: tuple[str, ...], out: dict[str, RawValue]) -> None:
        cached = self._requests.get(chunk)
        if cached is None:
            names = [contents(o) for o in chunk]
            if len(self._requests) >= 64:
                self._requests.clear()
            cached = self._requests[chunk] = (null_varbinds(names), names)
        varbinds, names = cached
        _, status, index, answer = await self._exchange(GET, 0, 0, varbinds)
        if status:
            if status == AUTHORIZATION_ERROR:
                raise AuthError("the agent refused the request (authorizationError)")
            if status == TOO_BIG and len(chunk) > 1:
                half = (len(chunk) + 1) // 2
                self._chunk = min(self._chunk, half)
                await self._get(chunk[:half], out)
                await self._get(chunk[half:], out)
                return
            if status == TOO_BIG:
                raise ProtocolError("the agent answers tooBig to a GET of one OID")
            if 1 <= index <= len(chunk):
                # An agent that fails a whole GET over one object it lacks (SNMPv1 style):
                # ask for the others, and not for that one again.
                self._refused.add(chunk[index - 1])
                rest = chunk[: index - 1] + chunk[index:]
                if rest:
                    await self._get(rest, out)
                return
            raise ProtocolError(f"the agent answered a GET with {_status(status)}")
        for position, (name, _, value) in enumerate(answer):
            if position >= len(chunk):
                break
            oid = chunk[position]
            # Values come back in the order asked; one under another name is not believed.
            if value is not None and name == names[position]:
                out[oid] = value

    async def lands_in(self, subtree: str) -> bool:
        """One GETBULK of one repetition: does the agent have anything below `subtree`?"""
        prefix = contents(subtree)
        _, status, _, answer = await self._exchange(GETBULK, 0, 1, null_varbinds([prefix]))
        if status == AUTHORIZATION_ERROR:
            raise AuthError("the agent refused the request (authorizationError)")
        if status or not answer:
            return False
        name, tag, _ = answer[0]
        return tag != TAG_END_OF_MIB_VIEW and len(name) > len(prefix) and name.startswith(prefix)

    async def walk(
        self,
        oid: str,
        stop: str | None = None,
        columns: int = 1,
        max_repetitions: int | None = None,
    ) -> list[tuple[str, RawValue]]:
        """Every (oid, value) below `oid`, ending before `stop`: GETBULK of one varbind."""
        prefix = contents(oid)
        stop_key = oid_key(stop) if stop is not None else None
        reps = max_repetitions or self._max_repetitions
        limit = MAX_TABLE_ROWS * max(1, columns)
        rows: list[tuple[str, RawValue]] = []
        seen: set[bytes] = set()
        last = prefix
        while True:
            _, status, _, answer = await self._exchange(GETBULK, 0, reps, null_varbinds([last]))
            if status == TOO_BIG and reps > 1:
                reps //= 2
                continue
            if status == AUTHORIZATION_ERROR:
                raise AuthError("the agent refused the request (authorizationError)")
            if status:
                raise ProtocolError(f"the agent answered a walk of {oid} with {_status(status)}")
            if not answer:
                return rows
            for name, tag, value in answer:
                if tag == TAG_END_OF_MIB_VIEW or len(name) <= len(prefix):
                    return rows
                if not name.startswith(prefix):
                    return rows
                shown = oid_text(name)
                if stop_key is not None and oid_key(shown) >= stop_key:
                    return rows
                if name in seen:
                    raise ProtocolError(f"agent returned {shown} twice: walk stuck")
                seen.add(name)
                rows.append((shown, value))
                if len(rows) > limit:
                    raise ProtocolError(f"table {oid} has more than {MAX_TABLE_ROWS} rows")
            last = answer[-1][0]

    def lane(self, number: int) -> SnmpTransport:
        """This transport: requests in flight side by side share its socket."""
        return self

    def close(self) -> None:
        """Close the socket; requests still waiting fail."""
        self._unwatch()
        self._fail(UnreachableError("the target's socket was closed"))
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._refused.clear()

    # --- the column walker -----------------------------------------------------------

    async def fetch(
        self,
        scalars: Sequence[str],
        columns: Sequence[WalkSpec],
        expected: Mapping[str, int],
        budget: int,
        inflight: int,
    ) -> tuple[dict[str, RawValue], dict[str, dict[str, RawValue]], dict[str, str]]:
        """One poll's scalars and columns in the fewest PDUs: the scalars ride the walk's
        GETBULKs as non-repeaters (up to half of `budget`) when the agent honours them, the
        rest go in a GET beside the walk (with max_inflight above 1) or before it. Returns
        scalars by OID, then what walk_columns returns."""
        wanted = [o for o in scalars if o not in self._refused] if self._refused else scalars
        if not columns:
            return (await self.get_many(wanted) if wanted else {}), {}, {}
        riders: _Riders | None = None
        if wanted and await self._rides():
            room = self._budget(budget) // 2  # at most half of each answer
            if room:
                riders = self._riding_set(tuple(wanted[:room]))
                wanted = wanted[len(riders.oids) :]
        values: dict[str, RawValue] = {}
        if wanted and inflight > 1:
            # Both run to the end (no stray task left behind), then the GET's error first.
            got, walked = await asyncio.gather(
                self.get_many(wanted),
                self._walk(columns, expected, budget, inflight - 1, riders),
                return_exceptions=True,
            )
            if isinstance(got, BaseException):
                raise got
            if isinstance(walked, BaseException):
                raise walked
            values = got
        else:
            if wanted:
                values = await self.get_many(wanted)
            walked = await self._walk(columns, expected, budget, inflight, riders)
        if riders is not None:
            values.update(riders.values)
            left = riders.left
            if left:
                values.update(await self.get_many(left))
        return values, *walked

    async def _rides(self) -> bool:
        """Whether the agent honours GETBULK's non-repeaters, asked once: one non-repeater
        and one repeater of two repetitions answer three varbinds (an agent that repeats
        the non-repeater too answers four, and would scramble the columns' rows)."""
        if self._riding is None:
            system = contents("1.3.6.1.2.1.1")
            _, status, _, answer = await self._exchange(
                GETBULK, 1, 2, null_varbinds([system, system])
            )
            if status == AUTHORIZATION_ERROR:
                raise AuthError("the agent refused the request (authorizationError)")
            self._riding = status == 0 and len(answer) == 3
        return self._riding

    def _riding_set(self, oids: tuple[str, ...]) -> _Riders:
        cached = self._riders.get(oids)
        if cached is None:
            if len(self._riders) >= 64:
                self._riders.clear()
            asks = null_varbinds([contents(_before(o)) for o in oids])
            cached = self._riders[oids] = (asks, [contents(o) for o in oids])
        return _Riders(oids, *cached)

    async def walk_columns(
        self,
        columns: Sequence[WalkSpec],
        expected: Mapping[str, int],
        budget: int,
        inflight: int,
    ) -> tuple[dict[str, dict[str, RawValue]], dict[str, str]]:
        """Walk the columns together: each GETBULK asks for the next rows of as many columns
        as fit in `budget` varbinds per answer, sized from `expected` (rows at the last
        poll), up to `inflight` GETBULKs at once. Returns rows by column and index, and why
        each failed column failed. Two timeouts with no answer between mean the device is
        gone: DeviceTimeoutError."""
        return await self._walk(columns, expected, budget, inflight, None)

    def _states(self, columns: Sequence[WalkSpec]) -> list[_Column]:
        """The columns' walk state, kept while the same columns are walked (a target's
        plan), so that a poll does not encode their OIDs again."""
        kept = self._kept
        if kept is not None and kept[0] == tuple(columns):
            self._kept = None  # in use: a walk beside this one gets its own
            return kept[1]
        return [_Column(c) for c in columns]

    async def _walk(
        self,
        columns: Sequence[WalkSpec],
        expected: Mapping[str, int],
        budget: int,
        inflight: int,
        riders: _Riders | None,
    ) -> tuple[dict[str, dict[str, RawValue]], dict[str, str]]:
        first = max(1, self._max_repetitions)
        states = self._states(columns)
        for state in states:
            state.start(expected.get(state.oid), first)
        ready = states
        timeouts = 0
        lanes = max(1, inflight)
        while ready:
            batches = self._pack(ready, budget)
            carrier = -1  # the batch the riders go with: the one with most room
            if riders is not None:
                carrier = self._carrier(batches, len(riders.oids), budget)
                if carrier < 0:
                    batches, carrier = self._pack(ready, budget, len(riders.oids)), 0
            for start in range(0, len(batches), lanes):
                group = batches[start : start + lanes]
                if len(group) == 1:
                    try:
                        await self._round(*group[0], riders if start == carrier else None)
                        results: list[BaseException | None] = [None]
                    except DeviceError as exc:
                        results = [exc]
                else:
                    results = await asyncio.gather(
                        *(
                            self._round(b, reps, riders if start + k == carrier else None)
                            for k, (b, reps) in enumerate(group)
                        ),
                        return_exceptions=True,
                    )
                for (batch, _), result in zip(group, results, strict=True):
                    if result is None:
                        timeouts = 0
                        continue
                    if not isinstance(result, DeviceError):
                        raise result
                    if isinstance(result, DeviceTimeoutError):
                        timeouts += 1
                        if timeouts >= 2:
                            raise result
                    for column in batch:
                        if not column.done and column.error is None:
                            column.error = str(result)
            ready = [c for c in states if not c.done and c.error is None]
            riders = None  # only the first round's GETBULKs carry them
        rows = {c.oid: c.rows for c in states if c.error is None}
        failed = {c.oid: f"walk {c.oid}: {c.error}" for c in states if c.error is not None}
        for state in states:
            state.rows = _RELEASED  # the rows are the caller's now; kept state holds none
        self._kept = (tuple(columns), states)
        return rows, failed

    def _budget(self, budget: int) -> int:
        """Varbinds per answer: the caller's budget, or less once the agent said tooBig."""
        if self._bulk_limit is not None:
            budget = min(budget, self._bulk_limit)
        return max(1, budget)

    def _pack(
        self, ready: list[_Column], budget: int, reserve: int = 0
    ) -> list[tuple[list[_Column], int]]:
        """Batches of (columns, repetitions): the columns wanting most rows first, each batch
        as many columns as `budget` varbinds hold at the repetitions its first one needs
        (the first batch `reserve` fewer, for riding scalars)."""
        budget = self._budget(budget)
        room = max(1, budget - reserve)
        order = sorted(ready, key=_NEED, reverse=True)
        out = []
        while order:
            reps = max(1, min(order[0].need, room))
            width = max(1, room // reps)
            out.append((order[:width], reps))
            del order[:width]
            room = budget
        return out

    def _carrier(self, batches: list[tuple[list[_Column], int]], riders: int, budget: int) -> int:
        """The batch with most room, if `riders` more varbinds fit in its answer; else -1."""
        sizes = [len(batch) * reps for batch, reps in batches]
        smallest = min(range(len(sizes)), key=sizes.__getitem__)
        return smallest if sizes[smallest] + riders <= self._budget(budget) else -1

    async def _round(self, batch: list[_Column], reps: int, riders: _Riders | None = None) -> None:
        """One GETBULK of the batch's next rows (after the riding scalars, if given); files
        them, marks ended columns done."""
        answer: list[Varbind] = []
        riding = 0
        while True:
            asks = _asks([c.last for c in batch])
            riding = len(riders.oids) if riders is not None else 0
            if riders is not None:
                asks = riders.asks + asks
            _, status, index, answer = await self._exchange(GETBULK, riding, reps, asks)
            if status == 0:
                break
            if status == AUTHORIZATION_ERROR:
                raise AuthError("the agent refused the request (authorizationError)")
            if riders is not None:
                # Whatever went wrong, the scalars go in a GET after the walk (which knows
                # tooBig and objects an agent refuses); the columns are asked again alone.
                if status == TOO_BIG:
                    size = riding + len(batch) * reps
                    self._bulk_limit = max(1, min(self._bulk_limit or size, size // 2))
                riders = None
                continue
            if status == TOO_BIG:
                size = len(batch) * reps
                self._bulk_limit = max(1, min(self._bulk_limit or size, size // 2))
                if reps > 1:
                    reps //= 2
                    continue
                if len(batch) > 1:
                    half = len(batch) // 2
                    await self._round(batch[:half], 1)
                    await self._round(batch[half:], 1)
                    return
                raise ProtocolError("the agent answers tooBig to a GETBULK of one varbind")
            if 1 <= index <= len(batch) and len(batch) > 1:
                batch[index - 1].error = f"the agent answered with {_status(status)}"
                batch = batch[: index - 1] + batch[index:]
                continue
            raise ProtocolError(f"the agent answered a GETBULK with {_status(status)}")
        if riders is not None:
            riders.settle(answer)
            if not riding + len(batch) <= len(answer) <= riding + len(batch) * reps:
                # Not one row per column after the scalars, or more than asked for: the
                # agent does not lay out non-repeaters as RFC 3416 says. No more riding;
                # the columns are asked again alone.
                self._riding = False
                await self._round(batch, reps)
                return
            answer = answer[riding:]
        _file(batch, reps, answer)


def _file(batch: list[_Column], reps: int, answer: list[Varbind]) -> None:
    """File a GETBULK answer's varbinds under their columns (varbind i answers column
    i mod width); a column ends at endOfMibView or the first OID outside it."""
    width = len(batch)
    if not answer:  # nothing more below any of them
        for column in batch:
            column.done = True
        return
    indexes = _INDEXES
    for slot, column in enumerate(batch):
        before = last = column.last
        prefix, cut, rows, stop = column.prefix, column.cut, column.rows, column.stop
        for name, tag, value in answer[slot::width]:
            if tag == TAG_END_OF_MIB_VIEW:
                column.done = True
                break
            if not (name > last or _arcs_after(name, last)):
                # A GETNEXT step answered with the OID asked, or one before it: the walk
                # would never end (firmware bugs do this). Bytes order is OID order except
                # where arcs of different encoded lengths meet (16384 is 81 80 00, 16383 is
                # ff 7f), so bytes that say "not after" are checked by arcs; bytes that
                # wrongly say "after" cannot make a walk endless: a row seen twice ends it.
                column.error = f"agent returned {_shown(name)} after {_shown(last)}: walk stuck"
                break
            if not name.startswith(prefix):  # (after `last`, so never the column itself)
                column.done = True  # past the column: its end
                break
            suffix = name[cut:]
            if stop and suffix and suffix[0] > stop:  # an entry walk past its last column
                column.done = True  # (the driver walks entries only below column 128)
                break
            key = indexes.get(suffix)
            if key is None:
                try:
                    key = _index(suffix)
                except MalformedError as exc:
                    column.error = f"undecodable row index: {exc}"
                    break
            if key in rows:
                column.error = f"agent returned {_shown(name)} twice: walk stuck"
                break
            rows[key] = value
            last = name
        column.last = last
        if len(rows) > MAX_TABLE_ROWS:  # (an answer adds at most a budget's varbinds)
            column.error = f"table column {column.oid} has more than {MAX_TABLE_ROWS} rows"
        if not column.done and column.error is None and last is not before:
            # More rows than last poll: ask for twice as many next time.
            column.need = max(2 * reps, 2)
