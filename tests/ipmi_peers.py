"""Hostile and healthy IPMI (RMCP+) peers on 127.0.0.1, for the IPMI hostile-input and fuzz
tests (issue 28).

Every peer is one UDP socket on an ephemeral loopback port, answered by one thread: safe
for parallel test workers. A healthy peer is the project's simulated BMC
(poller.simulator.rmcp + ipmi_bmc), which completes a real RMCP+ login with cipher suite
17 and serves the SDR and sensor commands. A hostile peer is the same BMC with its answers
tampered with at one stage of the login or session, so it can say something wrong exactly
where a real broken BMC (or anything else that can send UDP) would: the channel
capabilities, the Open Session response, RAKP 2, RAKP 4, or any command's response inside
the authenticated session (sealed with the session's keys, so it gets past pyghmi's
integrity check).
"""

from __future__ import annotations

import asyncio
import logging
import random
import selectors
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import yaml

from poller.config import Config, parse_config
from poller.driver import Driver, DriverContext, PollSpec, driver_for
from poller.model import PollResult
from poller.profiles import ProfileSet, load_profiles
from poller.scheduler import TargetRunner
from poller.simulator.ipmi_bmc import USERS, Bmc
from poller.simulator.model import RoomModel, Server
from poller.simulator.rmcp import (
    PT_IPMI,
    PT_OPEN_REQ,
    PT_RAKP1,
    PT_RAKP3,
    RMCP_HEADER,
    RmcpServer,
)
from poller.simulator.rmcp import Session as RmcpSession
from poller.store import Store

# Where a hostile BMC can say something wrong, in login order.
STAGES = ("capabilities", "open", "rakp2", "rakp4", "command")
USER, PASSWORD = "monitor", USERS["monitor"][0]
# Longest a peer serves before it stops by itself (a test that forgets to close it).
LIFETIME = 600.0

Answer = Callable[[bytes], Iterable[bytes]]
# A tampering: (stage, the honest reply) -> what is sent instead (any number of datagrams).
Tamper = Callable[[str, bytes], list[bytes]]


class UdpPeer:
    """One loopback UDP socket; each datagram received goes to `answer`, whose datagrams
    are sent back. `answer` may be swapped while serving; exceptions it raises are kept in
    `failures` (the harness, not the poller, went wrong) and the datagram is dropped."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.setblocking(False)
        self.port = int(self._sock.getsockname()[1])
        self.requests = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ipmi-peer", daemon=True)

    def start(self) -> UdpPeer:
        """Start serving."""
        self._thread.start()
        return self

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            deadline = threading.Event()
            timer = threading.Timer(LIFETIME, deadline.set)
            timer.daemon = True
            timer.start()
            try:
                while not self._stop.is_set() and not deadline.is_set():
                    if not selector.select(0.05):
                        continue
                    self._drain()
            finally:
                timer.cancel()

    def _drain(self) -> None:
        for _ in range(256):  # bounded: the stop flag is looked at between bursts
            try:
                data, addr = self._sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # closed under us
                return
            self.requests += 1
            try:
                replies = list(self.answer(data))
            except Exception as exc:  # recorded for the test to fail on
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            for reply in replies:
                try:
                    self._sock.sendto(reply, addr)
                except OSError:
                    break

    def close(self) -> None:
        """Stop serving and close the socket."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> UdpPeer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _stage_of(request: bytes) -> str:
    """Which login or session stage a console's datagram is at."""
    if len(request) < 16 or request[4] != 0x06:
        return "capabilities"  # IPMI 1.5 framing: pre-session commands only
    bare = request[5] & 0x3F
    if bare == PT_OPEN_REQ:
        return "open"
    if bare == PT_RAKP1:
        return "rakp2"
    if bare == PT_RAKP3:
        return "rakp4"
    if bare == PT_IPMI and struct.unpack_from("<I", request, 6)[0] == 0:
        return "capabilities"  # pre-session command in RMCP+ framing
    return "command"


class SimulatedBmc(RmcpServer):
    """The project's simulated Dell BMC (RMCP+ with suites 17 and 3, SDR, sensors), answering
    synchronously; with `tamper`, what it says at each stage passes through that first."""

    def __init__(self, tamper: Tamper | None = None, name: str = "srv-1") -> None:
        server = Server(name, "A", "dell", 0.5, 0.5)
        self.bmc = Bmc(RoomModel([server], []), server)
        super().__init__(USERS, self.bmc.guid, self.bmc.handle)
        self.tamper = tamper
        self.logins = 0  # RAKP 4 answers sent (completed logins)
        self.seen: Counter[str] = Counter()  # requests answered, by stage
        self._lock = threading.Lock()
        self._sealed: list[bytes] = []  # the tampered, sealed answers to the last command

    def answer(self, request: bytes) -> list[bytes]:
        """The datagrams to send back for one request."""
        with self._lock:  # the server's session table is not thread-safe
            self._sealed = []
            try:
                reply = self._dispatch(request)
            except (IndexError, ValueError, KeyError, struct.error):
                return []  # malformed request: dropped, as the asyncio server does
            sealed = self._sealed
        if reply is None:
            return []
        stage = _stage_of(request)
        self.seen[stage] += 1
        if stage == "rakp4":
            self.logins += 1
        if self.tamper is None:
            return [reply]
        if stage == "command":
            # Command answers were tampered with before sealing (see _seal), so that they
            # pass the console's integrity check and reach its parser.
            return sealed
        return self.tamper(stage, reply)

    def _seal(self, session: RmcpSession, payload: bytes) -> bytes:  # type: ignore[override]
        # The base class's _seal is a staticmethod called as self._seal: this sees every
        # IPMI response message of an authenticated session before it is sealed.
        if self.tamper is None:
            return RmcpServer._seal(session, payload)
        self._sealed = [RmcpServer._seal(session, p) for p in self.tamper("command", payload)]
        return self._sealed[0] if self._sealed else b""


def serve(tamper: Tamper | None = None) -> tuple[UdpPeer, SimulatedBmc]:
    """A started peer answering as the simulated BMC (tampered with, if given)."""
    bmc = SimulatedBmc(tamper)
    return UdpPeer(bmc.answer).start(), bmc


# -- the hostile peers of issue 28 ----------------------------------------------------------


def garbage(seed: int = 1) -> Answer:
    """Answers every datagram with random bytes behind a valid RMCP header (so they reach
    pyghmi's packet handler rather than its first filter)."""
    rng = random.Random(seed)

    def answer(_request: bytes) -> list[bytes]:
        return [RMCP_HEADER + rng.randbytes(rng.randrange(1, 64)) for _ in range(2)]

    return answer


def _at(stage: str, change: Callable[[bytes], list[bytes]]) -> Tamper:
    def tamper(seen: str, reply: bytes) -> list[bytes]:
        return change(reply) if seen == stage else [reply]

    return tamper


def _truncated(keep: int) -> Callable[[bytes], list[bytes]]:
    """Cut an RMCP+ session-setup packet's payload to `keep` bytes (length field too)."""

    def change(reply: bytes) -> list[bytes]:
        payload = reply[16 : 16 + keep]
        return [reply[:14] + struct.pack("<H", len(payload)) + payload]

    return change


# The Open Session response cut inside the console's session id: pyghmi's
# struct.unpack of it raised struct.error in whichever thread handled the packet.
TRUNCATED_OPEN = _at("open", _truncated(6))
# RAKP 2 cut inside the BMC's key exchange code: struct.pack raised struct.error.
BAD_RAKP2 = _at("rakp2", _truncated(44))
# Answers the capabilities and Open Session, then never RAKP 2: the login must time out.
SILENT_AFTER_OPEN = _at("rakp2", lambda _reply: [])

# Completes the login up to RAKP 4, then answers no command (not even Set Session
# Privilege Level, which pyghmi sent and waited for inside whichever thread handled RAKP 4).
SILENT_AFTER_RAKP4 = _at("command", lambda _reply: [])

HOSTILE: dict[str, Any] = {
    "garbage": garbage,
    "truncated-open": TRUNCATED_OPEN,
    "bad-rakp2": BAD_RAKP2,
    "silent-after-open": SILENT_AFTER_OPEN,
    "silent-after-rakp4": SILENT_AFTER_RAKP4,
}


def hostile_peer(kind: str) -> UdpPeer:
    """A started hostile peer of one of the HOSTILE kinds."""
    if kind == "garbage":
        return UdpPeer(garbage()).start()
    peer, _ = serve(HOSTILE[kind])
    return peer


# -- polling them the way hwpoller does -----------------------------------------------------


def targets_config(
    ports: dict[str, int],
    password: str = PASSWORD,
    timeout: str | dict[str, str] = "2s",
    process: bool = False,
    threads: int = 64,
) -> Config:
    """One IPMI target per (name, port) on 127.0.0.1, with the simulated BMC's user. With
    `process`, they are polled in the IPMI worker process (hwpoller's default); otherwise
    in this process, all in the one pyghmi loop the test can see. `timeout` may be given
    per target name."""
    doc = {
        "settings": {"ipmi_process": process, "ipmi_threads": threads},
        "auths": {"bmc": {"protocol": "ipmi", "username": USER, "password": password}},
        "targets": [
            {
                "name": name,
                "address": f"127.0.0.1:{port}",
                "protocol": "ipmi",
                "auth": "bmc",
                "timeout": timeout if isinstance(timeout, str) else timeout[name],
                "interval": "10s",
            }
            for name, port in ports.items()
        ],
    }
    return parse_config(yaml.safe_dump(doc), "<test>")


class Fleet:
    """Runners for every target of a config, sharing one DriverContext (so one IPMI thread
    pool or worker process); `round()` polls them all at once with fresh drivers, i.e.
    fresh logins, as after a BMC restart."""

    def __init__(self, config: Config, profiles: ProfileSet | None = None) -> None:
        self.config = config
        self.context = DriverContext(profiles or load_profiles(), config.settings)
        self.store = Store()
        for target in config.targets:
            self.store.register(target.name, target.protocol, target.labels)
        self._drivers: list[Driver] = []
        self._closing: set[asyncio.Future[None]] = set()

    async def round(self, fresh: bool = True) -> dict[str, PollResult]:
        """Poll every target once, concurrently; the results by target name."""
        if fresh or not self._drivers:
            await self._close_drivers()
            self._drivers = [
                driver_for(PollSpec.from_config(self.config, t), self.context)
                for t in self.config.targets
            ]
        runners = [
            TargetRunner(PollSpec.from_config(self.config, t), dict(t.labels), d, self.store, 0, 0)
            for t, d in zip(self.config.targets, self._drivers, strict=True)
        ]
        results = await asyncio.gather(*(r.poll_once() for r in runners))
        return {r.target: r for r in results}

    async def _close_drivers(self, wait: float | None = 0.3) -> None:
        drivers, self._drivers = self._drivers, []
        self._closing |= {asyncio.ensure_future(d.close()) for d in drivers}
        # A driver whose login still hangs in pyghmi waits for it up to its job deadline
        # (then raises TimeoutError): the next round does not wait for that.
        if self._closing:
            done, _ = await asyncio.wait(self._closing, timeout=wait)
            for task in done:
                task.cancelled() or task.exception()  # retrieved: never "never retrieved"
            self._closing -= done

    async def close(self) -> None:
        """Close every driver (BMC logouts) and the shared resources."""
        await self._close_drivers(wait=None)
        self.context.shutdown()


def tracebacks(records: Iterable[logging.LogRecord]) -> list[str]:
    """Log records that carry a traceback (in this process or forwarded by the worker)."""
    return [
        r.getMessage()
        for r in records
        if r.exc_info or "Traceback (most recent call last)" in r.getMessage()
    ]
