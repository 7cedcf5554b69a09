"""Hostile SNMP peers on loopback, one class per way a device (or anything that can send UDP
to the poller) can misbehave: silence, slowness, truncated or garbled replies, replies to the
wrong request, the two bytes that panic gufo-snmp's decoder, and walks that never advance.

Every peer is one UDP socket on 127.0.0.1 served by one thread with a selector loop. Peers
that need a correct answer to distort (slow, truncated, wrong request-id) forward the request
to a real agent (snmpsim) and distort what it says. Every loop is bounded: the serving loop
by a stop flag checked at least every 0.1 s and a lifetime, the queue of delayed replies and
the table of upstream sockets by a size cap.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api

# Longest a peer serves before it stops by itself (a test that forgets to stop it).
LIFETIME = 900.0
# Bounds on the state a peer keeps, whatever the traffic.
MAX_PENDING = 20_000
MAX_UPSTREAMS = 1024
# The reply that made gufo-snmp 0.13.0's Rust BER decoder panic (index out of bounds in
# src/ber/header.rs): a SEQUENCE tag and a long-form length whose two length bytes are
# missing.
PANIC_REPLY = b"\x30\x82"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"

_V2C = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]


def set_request_id(message: bytes, request_id: int) -> bytes:
    """The same SNMPv2c message with another request-id."""
    decoded, _ = decoder.decode(message, asn1Spec=_V2C.Message())
    pdu = _V2C.apiMessage.get_pdu(decoded)
    _V2C.apiPDU.set_request_id(pdu, request_id)
    return bytes(encoder.encode(decoded))


def request_id_of(message: bytes) -> int:
    """The request-id of an SNMPv2c message."""
    decoded, _ = decoder.decode(message, asn1Spec=_V2C.Message())
    return int(_V2C.apiPDU.get_request_id(_V2C.apiMessage.get_pdu(decoded)))


class HostilePeer:
    """Base: receives requests and sends whatever `replies` says, when it says.

    Subclasses override `replies(request)` -> [(delay seconds, datagram)] for requests they
    answer themselves, or `distort(request, upstream_reply)` for proxied ones (then
    `upstream` must be given).
    """

    kind = "hostile"

    def __init__(self, upstream: tuple[str, int] | None = None, seed: int = 1) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.setblocking(False)
        self.port = int(self._sock.getsockname()[1])
        self.upstream = upstream
        self.rng = random.Random(seed)
        self.requests = 0
        self.replies_sent = 0
        self.failures: list[str] = []  # exceptions raised by `replies`, for tests to check
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._pending: list[tuple[float, int, bytes, tuple[str, int]]] = []
        self._seq = itertools.count()
        # Client address -> its own socket towards the upstream agent, so that each answer
        # finds its way back to the client that asked.
        self._upstreams: dict[tuple[str, int], socket.socket] = {}
        self._requests_by_peer: dict[tuple[str, int], bytes] = {}
        self._thread = threading.Thread(
            target=self._serve, name=f"hostile-{self.kind}", daemon=True
        )

    # -- behaviour ---------------------------------------------------------------------

    def replies(self, request: bytes) -> list[tuple[float, bytes]]:
        """What to send back for one request, after which delays (default: nothing)."""
        return []

    def distort(self, request: bytes, answer: bytes) -> list[tuple[float, bytes]]:
        """What to send back instead of the upstream agent's answer (default: it, at once)."""
        return [(0.0, answer)]

    # -- machinery ---------------------------------------------------------------------

    def _schedule(self, replies: list[tuple[float, bytes]], peer: tuple[str, int]) -> None:
        now = time.monotonic()
        for delay, datagram in replies:
            if len(self._pending) < MAX_PENDING:
                heapq.heappush(self._pending, (now + delay, next(self._seq), datagram, peer))

    def _upstream_for(self, peer: tuple[str, int]) -> socket.socket:
        sock = self._upstreams.get(peer)
        if sock is None:
            if len(self._upstreams) >= MAX_UPSTREAMS:
                old_peer, old = next(iter(self._upstreams.items()))
                self._selector.unregister(old)
                old.close()
                del self._upstreams[old_peer]
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect(self.upstream or ("127.0.0.1", 9))
            self._selector.register(sock, selectors.EVENT_READ, peer)
            self._upstreams[peer] = sock
        return sock

    def _on_request(self) -> None:
        for _ in range(256):  # drain what is queued, but give the timers a turn
            try:
                data, peer = self._sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            self.requests += 1
            if self.upstream is None:
                try:
                    self._schedule(self.replies(data), peer)
                except Exception as exc:  # a broken behaviour must not end the peer
                    self.failures.append(repr(exc))
                continue
            try:
                self._upstream_for(peer).send(data)
                self._requests_by_peer[peer] = data
            except OSError:
                continue

    def _on_upstream(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        for _ in range(64):
            try:
                answer = sock.recv(65535)
            except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                return
            request = self._requests_by_peer.get(peer, b"")
            self._schedule(self.distort(request, answer), peer)

    def _flush_due(self) -> float:
        """Send every reply that is due; seconds until the next one (at most 0.1)."""
        now = time.monotonic()
        while self._pending and self._pending[0][0] <= now:
            _, _, datagram, peer = heapq.heappop(self._pending)
            try:
                self._sock.sendto(datagram, peer)
                self.replies_sent += 1
            except OSError:
                pass  # the client went away: nothing to do
        if not self._pending:
            return 0.1
        return max(0.0, min(0.1, self._pending[0][0] - now))

    def _serve(self) -> None:
        self._selector.register(self._sock, selectors.EVENT_READ, None)
        ends = time.monotonic() + LIFETIME
        while not self._stop.is_set() and time.monotonic() < ends:
            timeout = self._flush_due()
            for key, _ in self._selector.select(timeout):
                if key.data is None:
                    self._on_request()
                else:
                    self._on_upstream(key.fileobj, key.data)  # type: ignore[arg-type]
            if len(self._requests_by_peer) > MAX_UPSTREAMS:
                self._requests_by_peer.clear()

    def start(self) -> HostilePeer:
        """Start serving in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every socket."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._selector.close()
        for sock in self._upstreams.values():
            sock.close()
        self._sock.close()

    def __enter__(self) -> HostilePeer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class BlackHole(HostilePeer):
    """Receives every request and never answers (a dead card, a firewall that drops)."""

    kind = "blackhole"


class Slow(HostilePeer):
    """Answers correctly (from the upstream agent) but only after 2-4 s."""

    kind = "slow"

    def __init__(
        self, upstream: tuple[str, int], low: float = 2.0, high: float = 4.0, seed: int = 1
    ) -> None:
        super().__init__(upstream, seed)
        self.low, self.high = low, high

    def distort(self, request: bytes, answer: bytes) -> list[tuple[float, bytes]]:
        return [(self.rng.uniform(self.low, self.high), answer)]


class Truncated(HostilePeer):
    """Answers with the first part of the real answer (a lost fragment, a buggy stack)."""

    kind = "truncated"

    def distort(self, request: bytes, answer: bytes) -> list[tuple[float, bytes]]:
        return [(0.0, answer[: max(1, len(answer) // 2)])]


class WrongRequestId(HostilePeer):
    """Answers with the real answer under another request-id, three times 0.2 s apart, and
    never with the right one (a proxy mixing up clients; a reply to an old request)."""

    kind = "wrong-request-id"

    def distort(self, request: bytes, answer: bytes) -> list[tuple[float, bytes]]:
        try:
            wrong = set_request_id(answer, (request_id_of(answer) + 7919) % 2**31)
        except Exception:  # not v2c: send it garbled instead
            wrong = answer[::-1]
        return [(0.2 * i, wrong) for i in range(3)]


class Garbage(HostilePeer):
    """Answers every request with random bytes, some starting like a BER SEQUENCE."""

    kind = "garbage"

    def replies(self, request: bytes) -> list[tuple[float, bytes]]:
        size = self.rng.randint(1, 300)
        body = bytes(self.rng.getrandbits(8) for _ in range(size))
        if self.rng.random() < 0.5:
            body = b"\x30" + body
        return [(0.0, body)]


class Panicking(HostilePeer):
    """Answers every request with the two bytes 30 82 (see PANIC_REPLY)."""

    kind = "panic"

    def replies(self, request: bytes) -> list[tuple[float, bytes]]:
        return [(0.0, PANIC_REPLY)]


class Looping(HostilePeer):
    """An SNMPv2c 'APC UPS' that answers GET (sysObjectID) properly and every GETNEXT or
    GETBULK with the very OID it was asked for: a walk that never advances."""

    kind = "looping"

    def replies(self, request: bytes) -> list[tuple[float, bytes]]:
        try:
            message, _ = decoder.decode(request, asn1Spec=_V2C.Message())
        except Exception:  # not v2c: stay silent
            return []
        pdu = _V2C.apiMessage.get_pdu(message)
        response = _V2C.apiMessage.get_response(message)
        rsp_pdu = _V2C.apiMessage.get_pdu(response)
        varbinds = []
        for oid, _value in _V2C.apiPDU.get_varbinds(pdu):
            if str(oid) == SYS_OBJECT_ID:
                varbinds.append((oid, _V2C.ObjectIdentifier("1.3.6.1.4.1.318.1.3.27")))
            else:
                varbinds.append((oid, _V2C.Integer(1)))
        _V2C.apiPDU.set_varbinds(rsp_pdu, varbinds)
        return [(0.0, bytes(encoder.encode(response)))]


class Responder(HostilePeer):
    """Answers each request with whatever `answer(request)` returns (for fuzzing); stays
    silent while no answer function is set."""

    kind = "responder"

    def __init__(self) -> None:
        super().__init__()
        self.answer: Callable[[bytes], list[bytes]] | None = None

    def replies(self, request: bytes) -> list[tuple[float, bytes]]:
        answer = self.answer
        return [(0.0, d) for d in answer(request)] if answer is not None else []


# Every hostile class by name, and the reason a poll of it must end with ("" = success with
# partial errors: its scalars answer, its tables do not).
KINDS: dict[str, tuple[type[HostilePeer], bool, str]] = {
    # name: (class, needs an upstream agent, expected reason)
    "blackhole": (BlackHole, False, "timeout"),
    "slow": (Slow, True, "timeout"),
    "truncated": (Truncated, True, "protocol"),
    "wrong-request-id": (WrongRequestId, True, "timeout"),
    "garbage": (Garbage, False, "protocol"),
    "panic": (Panicking, False, "protocol"),
    "looping": (Looping, False, ""),
}


def start_peer(kind: str, upstream: tuple[str, int]) -> HostilePeer:
    """Start one hostile peer of a kind from KINDS."""
    cls, proxied, _ = KINDS[kind]
    if proxied:
        return cls(upstream).start()
    return cls().start()


class PeerProcess:
    """Hostile peers in a child process of their own (`python -m tests.hostile`), so that
    their work never competes with the poller under test for the same interpreter lock.
    `ports` maps each requested kind to its UDP port."""

    def __init__(self, kinds: list[str], upstream: tuple[str, int]) -> None:
        self._argv = [sys.executable, "-m", "tests.hostile", f"{upstream[0]}:{upstream[1]}"]
        self._argv += kinds
        self._proc: subprocess.Popen[str] | None = None
        self.ports: dict[str, int] = {}

    def start(self) -> PeerProcess:
        """Start the child and read the ports it serves on."""
        root = Path(__file__).resolve().parent.parent
        self._proc = subprocess.Popen(
            self._argv, cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("hostile peers did not start")
        self.ports = {k: int(v) for k, v in json.loads(line).items()}
        return self

    def stop(self) -> None:
        """Close the child's stdin (it then stops its peers and exits); kill if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> PeerProcess:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    """`python -m tests.hostile HOST:PORT KIND...`: serve one peer per kind (proxying to
    the agent at HOST:PORT), print {kind: port} as one JSON line, stop when stdin closes
    (or after LIFETIME)."""
    host, _, port = argv[0].rpartition(":")
    peers = {kind: start_peer(kind, (host, int(port))) for kind in dict.fromkeys(argv[1:])}
    try:
        print(json.dumps({k: p.port for k, p in peers.items()}), flush=True)
        waiter = threading.Thread(target=sys.stdin.read, daemon=True)
        waiter.start()
        waiter.join(LIFETIME)
    finally:
        for peer in peers.values():
            peer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
