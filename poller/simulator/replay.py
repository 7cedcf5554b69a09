"""A fast SNMP v1/v2c agent replaying .snmprec recordings on many UDP ports (scale tests).

snmpsim answers ~40 requests/s here and spends ~1 ms per varbind, far too slow to stand in
for thousands of devices. This agent parses each recording once into a sorted OID list whose
varbinds are pre-encoded BER, so a request costs a small BER decode, one dict lookup or
bisect per varbind and a join of ready-made bytes. Its answers are meant to be the ones
snmpsim gives for the same recording (checked by tests/test_replay.py with net-snmp tools):
a GET of a missing OID is noSuchInstance, v1 sees noSuchName and never a Counter64
(RFC 2576 4.1.2.1), an unknown community gets no answer. One difference by default: after
the last record snmpsim fills a GETBULK with endOfMibView, this agent stops after the first
all-endOfMibView repetition (RFC 3416 4.2.3); `fill_eom` / `--fill-eom` does as snmpsim.

Recording lines are `OID|TAG|VALUE`. Tags 2, 4, 5, 6, 64, 65, 66, 67, 68, 70 and the
exceptions 128-130 are served; an `x` suffix means a hex value. A variation tag such as
`4:writecache` or `2:numeric` is served as its base type when VALUE parses as one, otherwise
the line is skipped; so are blank, comment and unparsable lines. Lines are sorted by OID and
the first of duplicate OIDs wins.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import logging
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, cast

from poller.snmp.ber import (
    END_OF_MIB_VIEW,
    GET,
    GETBULK,
    GETNEXT,
    NO_SUCH_INSTANCE,
    NO_SUCH_NAME,
    RESPONSE,
    TOO_BIG,
    MalformedError,
    Oid,
    ber_integer,
    ber_oid,
    decode_oid,
    encode_arc,
    oid_contents,
    parse_oid,
    read_head,
    read_integer,
    read_varbind_names,
    tlv,
)

log = logging.getLogger(__name__)

MAX_SIZE = 65_000  # response cap; a UDP/IPv4 datagram carries at most 65,507 bytes


def _record_name(text: bytes, parents: dict[bytes, tuple[Oid, bytes]]) -> tuple[Oid, bytes]:
    """A recording line's OID and its BER contents, reusing its parent's (tables are listed
    row after row, so most lines differ from the one before only in the last arc)."""
    parent, _, last = text.strip().strip(b".").rpartition(b".")
    known = parents.get(parent)
    if known is None:
        head = parse_oid(parent.decode("ascii"))
        if len(head) < 2:
            oid = parse_oid(text.decode("ascii"))
            return oid, oid_contents(oid)
        known = parents[parent] = (head, oid_contents(head))
    arc = int(last)
    return (*known[0], arc), known[1] + encode_arc(arc)


# --- recordings ----------------------------------------------------------------------------

# snmprec tag -> BER tag of the value; the tag number is the sum of the BER identifier bits.
_INTEGER_TAGS = {"2": 0x02, "65": 0x41, "66": 0x42, "67": 0x43, "70": 0x46}
_UNSIGNED_BITS = {"65": 32, "66": 32, "67": 32, "70": 64}
_STRING_TAGS = {"4": 0x04, "68": 0x44}
_EXCEPTION_TAGS = {"128": b"\x80\x00", "129": b"\x81\x00", "130": b"\x82\x00"}


def encode_value(tag: str, value: bytes) -> bytes:
    """The BER value of one recording line; ValueError if VALUE does not fit TAG."""
    hexed = tag.endswith("x")
    base = tag[:-1] if hexed else tag
    raw = bytes.fromhex(value.decode("ascii")) if hexed else value
    if base in _STRING_TAGS:
        return tlv(_STRING_TAGS[base], raw)
    if base == "64":
        if hexed:
            if len(raw) != 4:
                raise ValueError("IpAddress needs 4 octets")
            return tlv(0x40, raw)
        return tlv(0x40, socket.inet_aton(value.decode("ascii").strip()))
    if hexed:
        raise ValueError(f"hex value for tag {base}")
    if base in _INTEGER_TAGS:
        number = int(value)
        bits = _UNSIGNED_BITS.get(base)
        low, high = (0, 2**bits - 1) if bits else (-(2**31), 2**31 - 1)
        if not low <= number <= high:
            raise ValueError(f"{number} out of range for tag {base}")
        return ber_integer(number, _INTEGER_TAGS[base])
    if base == "5":
        return b"\x05\x00"
    if base == "6":
        return ber_oid(parse_oid(value.decode("ascii")))
    if base in _EXCEPTION_TAGS:
        return _EXCEPTION_TAGS[base]
    raise ValueError(f"unknown tag {tag}")


@dataclass(slots=True)
class Recording:
    """One recording, parsed once: sorted OIDs and their varbinds as ready BER."""

    name: str
    oids: list[Oid] = field(default_factory=list)
    varbinds: list[bytes] = field(default_factory=list)  # SEQUENCE { name, value }
    by_oid: dict[Oid, int] = field(default_factory=dict)
    by_contents: dict[bytes, int] = field(default_factory=dict)  # OID contents -> index
    v1_hidden: set[int] = field(default_factory=set)  # Counter64 and exception values
    skipped: int = 0

    @classmethod
    def load(cls, path: Path, name: str | None = None) -> Recording:
        """Parse an .snmprec file (community defaults to the file name without .snmprec)."""
        return cls.parse(path.read_bytes(), name or path.stem)

    @classmethod
    def parse(cls, text: bytes, name: str) -> Recording:
        """Parse .snmprec contents."""
        rec = cls(name)
        rows: dict[Oid, tuple[bytes, bytes, bool]] = {}
        parents: dict[bytes, tuple[Oid, bytes]] = {}
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith(b"#"):
                continue
            parts = line.split(b"|", 2)
            try:
                oid, contents = _record_name(parts[0], parents)
                tag = parts[1].decode("ascii").strip()
                base = tag.split(":", 1)[0]  # a variation module: serve the base type
                value = encode_value(base, parts[2])
            except (IndexError, ValueError, OSError):  # inet_aton raises OSError
                rec.skipped += 1
                continue
            if oid not in rows:
                hidden = base == "70" or base in _EXCEPTION_TAGS
                rows[oid] = (contents, tlv(0x30, tlv(0x06, contents) + value), hidden)
        for i, oid in enumerate(sorted(rows)):
            contents, varbind, hidden = rows[oid]
            rec.oids.append(oid)
            rec.varbinds.append(varbind)
            rec.by_oid[oid] = i
            rec.by_contents[contents] = i
            if hidden:
                rec.v1_hidden.add(i)
        return rec


# --- requests ------------------------------------------------------------------------------


@dataclass(slots=True)
class Stats:
    """What the agent has seen since it started."""

    requests: int = 0  # answered
    varbinds: int = 0  # in responses
    malformed: int = 0
    wrong_community: int = 0
    unsupported: int = 0  # SET, traps, responses, GETBULK in v1
    too_big: int = 0
    internal: int = 0  # a bug here, not bad input: logged once


class Responder:
    """Turns request datagrams into response datagrams for a community -> Recording table."""

    def __init__(
        self, table: Mapping[str, Recording], max_size: int = MAX_SIZE, fill_eom: bool = False
    ) -> None:
        self.table = {name.encode(): rec for name, rec in table.items()}
        self.max_size = min(max_size, 65_507)  # also keeps every length within 3 octets
        # pysnmp (so snmpsim) fills every GETBULK repetition with endOfMibView; RFC 3416
        # 4.2.3 lets an agent stop after the first repetition that is all endOfMibView.
        self.fill_eom = fill_eom
        self.stats = Stats()
        self._oids: dict[bytes, Oid] = {}

    def answer(self, data: bytes) -> bytes | None:
        """The response to one datagram, or None to drop it; never raises for bad input."""
        try:
            return self._answer(data)
        except (MalformedError, IndexError, ValueError):
            self.stats.malformed += 1
            return None

    def _answer(self, data: bytes) -> bytes | None:
        tag, pos, end = read_head(data, 0, len(data))
        if tag != 0x30:
            raise MalformedError("not a message")
        version_at = pos
        version, pos = read_integer(data, pos, end)
        version_tlv = data[version_at:pos]
        tag, start, stop = read_head(data, pos, end)
        if tag != 0x04:
            raise MalformedError("no community")
        community_tlv = data[pos:stop]
        rec = self.table.get(data[start:stop])
        pdu_type, pos, end = read_head(data, stop, end)
        if version not in {0, 1} or not 0xA0 <= pdu_type <= 0xA8:
            raise MalformedError("not an SNMP v1/v2c PDU")
        if rec is None:
            self.stats.wrong_community += 1  # real agents stay silent (and count it)
            return None
        if pdu_type not in {GET, GETNEXT, GETBULK} or (version == 0 and pdu_type == GETBULK):
            self.stats.unsupported += 1
            return None
        id_at = pos
        _, pos = read_integer(data, pos, end)
        request_id_tlv = data[id_at:pos]
        field1, pos = read_integer(data, pos, end)
        field2, pos = read_integer(data, pos, end)
        tag, pos, end = read_head(data, pos, end)
        if tag != 0x30:
            raise MalformedError("no varbind list")
        request_vbl = data[pos:end]
        names = read_varbind_names(data, pos, end)
        head = version_tlv + community_tlv
        # Room for the varbinds: the cap less the headers (each length at most 4 octets).
        budget = self.max_size - len(head) - len(request_id_tlv) - 6 - 3 * 4
        if pdu_type == GETBULK:
            parts = self._bulk(rec, names, max(field1, 0), max(field2, 0), budget)
            return self._response(head, request_id_tlv, 0, 0, parts)
        if version == 0:
            parts, failed = self._v1(rec, names, pdu_type == GETNEXT)
            if failed:
                return self._response(head, request_id_tlv, NO_SUCH_NAME, failed, [request_vbl])
        else:
            parts = self._v2(rec, names, pdu_type == GETNEXT)
        if sum(map(len, parts)) > budget:
            self.stats.too_big += 1
            # v1 echoes the request's varbinds (RFC 1157 4.1.2), v2c sends none (RFC 3416).
            parts = [request_vbl] if version == 0 else []
            return self._response(head, request_id_tlv, TOO_BIG, 0, parts)
        return self._response(head, request_id_tlv, 0, 0, parts)

    def _response(
        self, head: bytes, request_id: bytes, status: int, index: int, parts: list[bytes]
    ) -> bytes:
        vbl = b"".join(parts)
        self.stats.requests += 1  # here: a request found malformed late is counted once
        if status == 0:
            self.stats.varbinds += len(parts)
            fields = b"\x02\x01\x00\x02\x01\x00"
        else:
            fields = ber_integer(status) + ber_integer(index)
        pdu = request_id + fields + tlv(0x30, vbl)
        return tlv(0x30, head + tlv(RESPONSE, pdu))

    def _oid(self, contents: bytes) -> Oid:
        """Decoded OID contents, cached: pollers ask for the same subtree roots every time."""
        oid = self._oids.get(contents)
        if oid is None:
            if len(self._oids) >= 100_000:
                self._oids.clear()
            oid = self._oids[contents] = decode_oid(contents)
        return oid

    def _exact(self, rec: Recording, contents: bytes) -> int | None:
        """Index of the record named by OID contents, if any."""
        i = rec.by_contents.get(contents)
        # A name not in canonical form still names the record (and a bad one raises).
        return i if i is not None else rec.by_oid.get(self._oid(contents))

    def _next(self, rec: Recording, contents: bytes) -> int:
        """Index of the first record after the OID (len(rec.oids): none)."""
        i = rec.by_contents.get(contents)  # a walk asks for the record it was last given
        return i + 1 if i is not None else bisect.bisect_right(rec.oids, self._oid(contents))

    def _v2(self, rec: Recording, names: list[tuple[bytes, bytes]], nxt: bool) -> list[bytes]:
        out = []
        varbinds, count = rec.varbinds, len(rec.varbinds)
        for name, contents in names:
            if nxt:
                i = self._next(rec, contents)
                out.append(varbinds[i] if i < count else tlv(0x30, name + END_OF_MIB_VIEW))
                continue
            j = self._exact(rec, contents)
            out.append(varbinds[j] if j is not None else tlv(0x30, name + NO_SUCH_INSTANCE))
        return out

    def _v1(
        self, rec: Recording, names: list[tuple[bytes, bytes]], nxt: bool
    ) -> tuple[list[bytes], int]:
        """v1 varbinds, or the 1-based index of the first varbind that is noSuchName."""
        out = []
        hidden = rec.v1_hidden
        for n, (_, contents) in enumerate(names, 1):
            if nxt:
                i = self._next(rec, contents)
                while i in hidden:  # skip what v1 cannot carry (RFC 2576 4.1.2.1)
                    i += 1
                if i >= len(rec.oids):
                    return [], n
            else:
                j = self._exact(rec, contents)
                if j is None or j in hidden:
                    return [], n
                i = j
            out.append(rec.varbinds[i])
        return out, 0

    def _bulk(
        self,
        rec: Recording,
        names: list[tuple[bytes, bytes]],
        non_repeaters: int,
        max_repetitions: int,
        budget: int,
    ) -> list[bytes]:
        """RFC 3416 4.2.3, truncated to the size budget instead of answering tooBig."""
        varbinds = rec.varbinds
        count = len(varbinds)
        n = min(non_repeaters, len(names))
        out: list[bytes] = []
        used = 0
        positions: list[int] = []  # per repeater: index of its next record
        ends: list[bytes] = []  # per repeater: its endOfMibView varbind
        for k, (name, contents) in enumerate(names):
            i = self._next(rec, contents)
            if k < n:
                vb = varbinds[i] if i < count else tlv(0x30, name + END_OF_MIB_VIEW)
                used += len(vb)
                if used > budget:
                    return out
                out.append(vb)
            else:
                positions.append(i)
                ends.append(tlv(0x30, name + END_OF_MIB_VIEW))
        if not positions:
            return out
        # Each repetition is a GETNEXT of the name before: past the last record, that name
        # is the last record's.
        last_eom = tlv(0x30, ber_oid(rec.oids[-1]) + END_OF_MIB_VIEW) if count else b""
        width = len(positions)
        for _ in range(max_repetitions):
            ended = 0
            for c in range(width):
                i = positions[c]
                if i < count:
                    vb = varbinds[i]
                    positions[c] = i + 1
                    if i + 1 == count:
                        ends[c] = last_eom
                else:
                    vb = ends[c]
                    ended += 1
                used += len(vb)
                if used > budget:
                    return out
                out.append(vb)
            if ended == width and not self.fill_eom:
                break
        return out


def build_request(
    community: str,
    oids: Sequence[Oid],
    pdu_type: int = GET,
    version: int = 1,
    request_id: int = 1,
    non_repeaters: int = 0,
    max_repetitions: int = 0,
) -> bytes:
    """A v1 (version 0) or v2c (version 1) request datagram with NULL values."""
    vbl = b"".join(tlv(0x30, ber_oid(oid) + b"\x05\x00") for oid in oids)
    fields = (0, 0) if pdu_type != GETBULK else (non_repeaters, max_repetitions)
    pdu = ber_integer(request_id) + ber_integer(fields[0]) + ber_integer(fields[1])
    body = (
        ber_integer(version) + tlv(0x04, community.encode()) + tlv(pdu_type, pdu + tlv(0x30, vbl))
    )
    return tlv(0x30, body)


# --- serving -------------------------------------------------------------------------------


class _Port(asyncio.DatagramProtocol):
    """One UDP port: every datagram goes through its Responder."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to answer on."""
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        """Answer, or drop what the Responder drops."""
        try:
            reply = self.responder.answer(data)
        except Exception:  # one bad request never stops the agent
            stats = self.responder.stats
            stats.internal += 1
            if stats.internal == 1:
                log.exception("replay agent: internal error answering %r", data[:64])
            return
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors (a client that went away) are no reason to stop serving."""


def _raise_nofile(needed: int) -> None:
    """Lift the soft open-files limit towards the hard one when many ports need sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class ReplayAgent:
    """Replayed recordings on `ports` UDP ports, served from a thread or an event loop.

    With `recordings` (community -> file) every port serves every recording, as snmpsim does.
    With `per_port` (files) port k serves only per_port[k % len(per_port)], under `community`
    or else the file name without .snmprec: one port per simulated device.
    """

    def __init__(
        self,
        recordings: Mapping[str, Path] | None = None,
        ports: int = 1,
        *,
        per_port: Sequence[Path] | None = None,
        community: str | None = None,
        host: str = "127.0.0.1",
        first_port: int = 0,
        max_size: int = MAX_SIZE,
        fill_eom: bool = False,
    ) -> None:
        if (recordings is None) == (per_port is None) or ports < 1:
            raise ValueError("give either recordings or per_port, and ports >= 1")
        self.host = host
        self._first_port = first_port
        self._count = ports
        parsed: dict[Path, Recording] = {}

        def load(path: Path, name: str) -> Recording:
            key = Path(path).resolve()
            if key not in parsed:
                parsed[key] = Recording.load(key, name)
            return parsed[key]

        if recordings is not None:
            shared = Responder(
                {name: load(path, name) for name, path in recordings.items()}, max_size, fill_eom
            )
            self._responders = [shared] * ports
        else:
            assert per_port is not None  # noqa: S101 - checked above
            by_file: dict[Path, Responder] = {}
            for path in per_port:
                name = community or Path(path).stem
                if path not in by_file:
                    by_file[path] = Responder({name: load(path, name)}, max_size, fill_eom)
            self._responders = [by_file[per_port[k % len(per_port)]] for k in range(ports)]
        self.recordings = list(parsed.values())
        self.communities = [
            sorted(name.decode() for name in responder.table) for responder in self._responders
        ]
        self.ports: list[int] = []
        self._socks: list[socket.socket] = []
        self._transports: list[asyncio.DatagramTransport] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The first port."""
        return self.ports[0]

    @property
    def stats(self) -> Stats:
        """Counters summed over the ports."""
        total = Stats()
        for responder in {id(r): r for r in self._responders}.values():
            for name in Stats.__slots__:
                setattr(total, name, getattr(total, name) + getattr(responder.stats, name))
        return total

    def bind(self) -> list[int]:
        """Bind every port now (so a taken port fails here, in the caller)."""
        _raise_nofile(self._count + 256)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            for k in range(self._count):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                self._socks.append(sock)
                port = self._first_port + k if self._first_port else 0
                try:
                    sock.bind((self.host, port))
                except OSError as exc:
                    raise OSError(exc.errno, f"cannot bind {self.host}:{port}: {exc}") from exc
                sock.setblocking(False)
                self.ports.append(int(sock.getsockname()[1]))
        except BaseException:
            self.close()
            self.ports = []
            raise
        return self.ports

    async def open(self) -> None:
        """Serve the bound ports on the running event loop."""
        if not self._socks:
            self.bind()
        loop = asyncio.get_running_loop()
        for sock, responder in zip(self._socks, self._responders, strict=True):
            transport, _ = await loop.create_datagram_endpoint(
                lambda r=responder: _Port(r),  # type: ignore[misc]
                sock=sock,
            )
            self._transports.append(transport)

    def close(self) -> None:
        """Close every transport and socket."""
        for transport in self._transports:
            transport.close()
        for sock in self._socks:
            sock.close()
        self._transports, self._socks = [], []

    def start(self) -> ReplayAgent:
        """Bind, then serve from a daemon thread with its own event loop."""
        self.bind()
        loop = asyncio.new_event_loop()
        loop.run_until_complete(self.open())
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="replay-agent", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and release the ports."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            self.close()
            loop.run_until_complete(asyncio.sleep(0))  # let the transports finish closing
            loop.close()
        else:
            self.close()
        self._loop = self._thread = None

    def __enter__(self) -> ReplayAgent:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ReplayProcess:
    """The replay CLI in a subprocess, so its CPU is not the measured process's.

    Arguments as for ReplayAgent, with recordings as files (community = file name).
    """

    def __init__(
        self,
        recordings: Sequence[Path],
        ports: int = 1,
        *,
        per_port: bool = False,
        community: str | None = None,
        host: str = "127.0.0.1",
        first_port: int = 0,
        fill_eom: bool = False,
    ) -> None:
        self.host = host
        self.ports: list[int] = []
        self.communities: list[str] = []
        self.per_port: list[str] = []
        self.stats: dict[str, float] = {}
        self._argv = [sys.executable, "-m", "poller.simulator.replay", "--host", host]
        self._argv += ["--ports", str(ports), "--first-port", str(first_port), "--recording"]
        self._argv += [str(path) for path in recordings]
        if per_port:
            self._argv.append("--per-port")
        if community is not None:
            self._argv += ["--community", community]
        if fill_eom:
            self._argv.append("--fill-eom")
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[bytes] | None = None
        self.stderr = ""  # what the agent wrote there, once stopped

    @property
    def port(self) -> int:
        """The first port."""
        return self.ports[0]

    def start(self, timeout: float = 30.0) -> ReplayProcess:
        """Start the agent and wait until its first and last ports answer."""
        deadline = time.monotonic() + timeout
        # stderr to a file: a pipe nobody reads could fill and stall the agent.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._proc = proc = subprocess.Popen(
            self._argv, stdout=subprocess.PIPE, stderr=self._stderr, text=True
        )
        assert proc.stdout is not None  # noqa: S101 - PIPE was asked for
        # The CLI prints one line once every port is bound (parsing may take a while).
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"replay agent did not start: {self.stderr or 'timeout'}")
        info = json.loads(line)
        self.ports, self.communities = info["ports"], info["communities"]
        self.per_port = info.get("per_port", [])
        for k in {0, len(self.ports) - 1}:
            community = self.per_port[k] if self.per_port else self.communities[0]
            while not _answers(self.host, self.ports[k], community):
                if time.monotonic() > deadline or proc.poll() is not None:
                    self.stop()
                    raise TimeoutError(f"replay agent did not answer within {timeout}s")
        return self

    def stop(self) -> dict[str, float]:
        """Terminate the agent; returns its final counters and CPU seconds."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            for line in out.splitlines():
                if line.startswith("{"):
                    self.stats = json.loads(line)
        if self._stderr is not None:
            self._stderr.seek(0)
            self.stderr = self._stderr.read().decode(errors="replace")
            self._stderr.close()
            self._stderr = None
        return self.stats

    def __enter__(self) -> ReplayProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _answers(host: str, port: int, community: str) -> bool:
    """True when a GET of sysObjectID.0 gets any answer within 0.3 s."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        try:
            sock.sendto(build_request(community, [(1, 3, 6, 1, 2, 1, 1, 2, 0)]), (host, port))
            return bool(sock.recv(65_535))
        except OSError:
            return False


# --- command line ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m poller.simulator.replay`: serve recordings until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m poller.simulator.replay", description=__doc__)
    parser.add_argument("--recording", nargs="+", type=Path, required=True, metavar="FILE")
    parser.add_argument("--ports", type=int, default=1, help="how many UDP ports (default 1)")
    parser.add_argument("--first-port", type=int, default=0, help="0: any free ports")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--per-port", action="store_true", help="port k serves recording k mod the count"
    )
    parser.add_argument("--community", help="with --per-port: one community for every port")
    parser.add_argument("--max-size", type=int, default=MAX_SIZE, help="response size cap")
    parser.add_argument(
        "--fill-eom", action="store_true", help="fill GETBULK with endOfMibView as snmpsim does"
    )
    args = parser.parse_args(argv)
    try:
        agent = _agent(args)
        agent.bind()
    except (OSError, ValueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    info: dict[str, object] = {"host": args.host, "ports": agent.ports}
    info["communities"] = sorted({c for names in agent.communities for c in names})
    if args.per_port:
        info["per_port"] = [names[0] for names in agent.communities]
    skipped = {rec.name: rec.skipped for rec in agent.recordings if rec.skipped}
    if skipped:
        info["skipped_lines"] = skipped
    print(json.dumps(info), flush=True)
    asyncio.run(_serve(agent))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result: dict[str, float] = {name: getattr(agent.stats, name) for name in Stats.__slots__}
    result["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 3)
    print(json.dumps(result), flush=True)
    return 0


def _agent(args: argparse.Namespace) -> ReplayAgent:
    """The agent the command line asks for (recordings are parsed here)."""
    if args.per_port:
        return ReplayAgent(
            per_port=args.recording,
            ports=args.ports,
            community=args.community,
            host=args.host,
            first_port=args.first_port,
            max_size=args.max_size,
            fill_eom=args.fill_eom,
        )
    return ReplayAgent(
        {path.stem: path for path in args.recording},
        args.ports,
        host=args.host,
        first_port=args.first_port,
        max_size=args.max_size,
        fill_eom=args.fill_eom,
    )


async def _serve(agent: ReplayAgent) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.open()
    await stop.wait()
    agent.close()


if __name__ == "__main__":
    sys.exit(main())
