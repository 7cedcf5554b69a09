"""One RMCP+ session to one BMC over pyghmi, with hwpoller's security policy. Blocking.

Everything here runs in a worker thread of the IPMI executor, never on the event loop.

pyghmi keeps sessions in class-level tables and hands an existing session back when a new
one is asked for with the same BMC and credentials. After a BMC restarts or a session is
logged out, those tables can hold a stale entry; asking pyghmi for a new session then hangs
(it waits for a login that never finishes) or fails with a TypeError. So hwpoller creates
its sessions directly, bypassing that lookup: each connect is a fresh login, and the old
session is logged out and forgotten by the driver.

pyghmi's I/O thread waits with select.select(), which refuses file descriptors >= 1024
(FD_SETSIZE): in a process whose SNMP targets hold the low descriptors, its first wait
raises ValueError, the thread dies and no BMC ever logs in. pyghmi looks `select` up as
its session module's global on every wait, so this module replaces that global with
PollSelect (the same select() call, implemented with poll(2)) on import, before any
session exists.

pyghmi guards its retry table with one global lock and its keepalive table with another,
and takes them in both orders: send_payload holds KEEPALIVE_SESSIONS and then takes
WAITING_SESSIONS to arm the retry timer, while a retry (awaitresponse and wait_for_rsp call
_timedout) holds WAITING_SESSIONS and then sends, taking KEEPALIVE_SESSIONS. Two threads
meeting there hang every IPMI thread for good; with 1,000 BMCs on a busy host (replies late,
retries) that happened within a minute. Both names are module globals looked up at each
use, so this module makes them the same reentrant lock.

pyghmi has one receive loop for every session in the process: whichever thread waits
(a login, a command, a keepalive) handles the packets queued for *every* session, and its
parsers assume well-formed input. A BMC's truncated Open Session response or RAKP 2 then
raised struct.error in another BMC's login thread, failing that one (as `internal`)
instead of the BMC that sent it. _StrictSession catches what its packet handler, retry
timer and keepalive raise, records it on the session the packet was for (pyghmi routed it
there by the BMC's address), ends that session's login, and the session's own thread
raises it as a DeviceError: `protocol` for a packet pyghmi cannot parse, the login error
for pyghmi's own IpmiException, and the exception itself when hwpoller's own code raised it
(a bug: `internal`, with its traceback).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pyghmi import exceptions as pyghmi_exc
from pyghmi.ipmi.private import session as pyghmi_session

from poller.errors import (
    AuthError,
    DeviceError,
    DeviceTimeoutError,
    ProtocolError,
    UnreachableError,
    UnsupportedError,
)

# IPMI privilege levels as numbered in the spec (RAKP message 1, Set Session Privilege).
PRIVILEGES = {"callback": 1, "user": 2, "operator": 3, "administrator": 4}
# pyghmi's integrity algorithm numbers after login: 256 = SHA-256 (cipher suite 17),
# 1 = SHA-1 (cipher suite 3). pyghmi never proposes suite 0 (no authentication).
CIPHER_SUITES = {256: 17, 1: 3}
# Completion code a whole command can fail with when the session is gone.
NO_RESPONSE = 0xFFFF
# Longest single sleep while waiting for a reply (see _StrictSession.awaitresponse).
WAIT_SLICE = 0.02
# A login thread gives up after this long whatever pyghmi's retry timers say (they end a
# login within seconds; this only bounds a thread should they not).
LOGIN_LIMIT = 60.0
# What pyghmi tells login waiters when a session breaks (the reason is in errormsg).
GENERIC_LOGIN_ERROR = "Session failed to initialize"

_LOCK_INIT = threading.Lock()
# Held while a login picks its socket and sends its first packet (see BmcSession._login).
_LOGIN_START = threading.Lock()
# hwpoller's own source tree: an exception raised in it is hwpoller's bug, not the BMC's.
_OWN_CODE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# pyghmi's login state -> what the BMC was answering, for error messages.
_STAGES = {
    "OPENSESSION": "Open Session response",
    "EXPECTINGRAKP2": "RAKP 2",
    "EXPECTINGRAKP4": "RAKP 4",
    "ESTABLISHED": "session packet",
}

REFUSED_V15 = "the BMC offers only IPMI 1.5 (no RMCP+); set ipmi.allow_ipmi_v1_5 to accept it"

_AUTH_HINTS = (
    "incorrect password",
    "unauthorized name",
    "unauthorized role",
    "invalid role",
    "invalid username",
    "invalid integrity check value",
    "unauthorized guid",
    "wrong kg",
)
_UNSUPPORTED_HINTS = (
    "no cipher suite match",
    "invalid authentication algorithm",
    "invalid integrity algorithm",
    "invalid confidentiality algorithm",
    "md5 required",
)


def _recv_now(mysocket: socket.socket, size: int) -> tuple[bytes, Any] | None:
    """pyghmi's _io_recvfrom, non-blocking per call (MSG_DONTWAIT) instead of by toggling
    the socket's mode. pyghmi's receive loop sets a socket non-blocking and then reads it,
    while any thread sending on it sets it blocking first: a send in between left the loop
    blocked in recvfrom for good, with every IPMI login and command waiting on it (seen as
    a test hanging with many BMCs logging in at once)."""
    try:
        return mysocket.recvfrom(size, socket.MSG_DONTWAIT)
    except OSError:
        return None


pyghmi_session._io_recvfrom = _recv_now


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


_Waitable = int | _HasFileno


def _fd(obj: _Waitable) -> int:
    fd = obj if isinstance(obj, int) else obj.fileno()
    if not isinstance(fd, int) or fd < 0:
        raise ValueError(f"file descriptor cannot be a negative integer ({fd})")
    return fd


class PollSelect:
    """A stand-in for the `select` module whose select() has no FD_SETSIZE limit.

    Same call and results as select.select(rlist, wlist, xlist, timeout): the objects
    passed in (ints or objects with fileno()) come back in three lists; a timeout of None
    blocks, a negative one is a ValueError; a descriptor that is not open is an OSError
    (EBADF), as select() reports it.
    """

    error = OSError

    @staticmethod
    def select(
        rlist: Iterable[_Waitable],
        wlist: Iterable[_Waitable],
        xlist: Iterable[_Waitable],
        timeout: float | None = None,
    ) -> tuple[list[Any], list[Any], list[Any]]:
        """select.select() over poll(2)."""
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be non-negative")
        wanted: dict[int, int] = {}
        owners: dict[int, tuple[list[_Waitable], list[_Waitable], list[_Waitable]]] = {}
        for kind, (objs, mask) in enumerate(
            ((rlist, select.POLLIN), (wlist, select.POLLOUT), (xlist, select.POLLPRI))
        ):
            for obj in objs:
                fd = _fd(obj)
                wanted[fd] = wanted.get(fd, 0) | mask
                owners.setdefault(fd, ([], [], []))[kind].append(obj)
        poller = select.poll()
        for fd, mask in wanted.items():
            poller.register(fd, mask)
        # poll() takes milliseconds and rounds a fraction up, as select() does microseconds.
        events = poller.poll(None if timeout is None else timeout * 1000)
        ready: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
        for fd, revents in events:
            if revents & select.POLLNVAL:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
            # select() reports an error as readable and writable, a hang-up as readable.
            flags = (
                revents & (select.POLLIN | select.POLLERR | select.POLLHUP),
                revents & (select.POLLOUT | select.POLLERR),
                revents & select.POLLPRI,
            )
            for kind, flag in enumerate(flags):
                if flag:
                    ready[kind].extend(owners[fd][kind])
        return ready


# Before any session: pyghmi's I/O thread calls `select.select` through this global.
pyghmi_session.select = PollSelect()
# One lock for both tables (see the module docstring): no lock order left to invert.
pyghmi_session.KEEPALIVE_SESSIONS = pyghmi_session.WAITING_SESSIONS


def _raised_by_hwpoller(exc: BaseException) -> bool:
    """True when the innermost frame of the exception's traceback is hwpoller's code."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(_OWN_CODE)


class _StrictSession(pyghmi_session.Session):  # type: ignore[misc]
    """pyghmi's session with IPMI 1.5 refused unless allowed, and with its failures kept
    to itself (see the module docstring).

    pyghmi silently falls back to IPMI 1.5 (MD5 challenge, no encryption) when the BMC's
    Get Channel Authentication Capabilities reply does not offer IPMI 2.0, or rejects the
    2.0 form of that request. The check happens here, before any credential is sent.
    """

    allow_v15 = False
    # Why the session failed, when its packet handling raised: the DeviceError its own
    # thread raises (or hwpoller's own exception). The first failure wins.
    failure: BaseException | None = None
    # pyghmi sets this only when a session breaks; a default keeps every read safe.
    errormsg: str | None = None
    # The thread waiting for this session's login (await_login), and whether the login's
    # last step is waiting for that thread (_req_priv_level).
    _login_thread: int | None = None
    _privilege_due = False

    def _fail(self, exc: BaseException) -> None:
        """Attribute an exception raised while handling this session's packets to it."""
        self._end(self._failure_for(exc))

    def _end(self, failure: BaseException) -> None:
        """Fail the session with `failure` (unless it already failed)."""
        if self.failure is None:
            self.failure = failure
        if self.logging and not self.broken:
            # A login in progress: end it now, whichever thread waits for it. logged is
            # cleared first so that pyghmi's logout sends no Close Session for a login that
            # never finished (it would wait here for the command slot, in this thread,
            # which may be another BMC's).
            self.logged = 0
            self._mark_broken(str(self.failure))

    def _failure_for(self, exc: BaseException) -> BaseException:
        if isinstance(exc, pyghmi_exc.IpmiException):
            if self.logging:
                return classify_login_error(str(exc))
            return DeviceTimeoutError(f"the BMC stopped answering ({exc})")
        if _raised_by_hwpoller(exc):
            return exc  # hwpoller's bug: raised as it is, counted as internal
        stage = _STAGES.get(str(getattr(self, "sessioncontext", None)), "answer during login")
        kind = type(exc)
        name = (
            kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
        )
        return ProtocolError(f"the BMC sent a malformed {stage} ({name}: {exc})")

    def _handle_ipmi_packet(self, data: bytearray, sockaddr: Any = None, qent: Any = None) -> Any:
        # Any thread may be here (pyghmi's shared receive loop), so nothing this session's
        # packet raises may escape into that thread. A try costs nothing when nothing raises.
        try:
            return super()._handle_ipmi_packet(data, sockaddr, qent)
        except Exception as exc:  # noqa: BLE001 - attributed to this session, raised by its thread
            self._fail(exc)
            return None

    def _timedout(self) -> None:
        if (
            self.logging
            and not self.logged
            and self.lastpayload
            and self.logontries <= 0
            and self.sessioncontext in ("EXPECTINGRAKP2", "EXPECTINGRAKP4")
        ):
            # pyghmi starts the login over on every RAKP timeout without counting its
            # retries down to a failure (logontries goes negative): a BMC that answers Open
            # Session but never RAKP 2 kept a thread logging in again every second, for
            # good, and stalled every other login in the process. One restart, as pyghmi
            # allows for the other steps, then the login times out.
            rakp = "RAKP 2" if self.sessioncontext == "EXPECTINGRAKP2" else "RAKP 4"
            self._end(DeviceTimeoutError(f"the BMC stopped answering the login (no {rakp})"))
            return
        # Called for every session from whichever thread runs pyghmi's loop, like packets.
        try:
            super()._timedout()
        except Exception as exc:  # noqa: BLE001 - as in _handle_ipmi_packet
            self._fail(exc)

    def _keepalive(self) -> None:
        # pyghmi catches only its IpmiException here; its loop runs this in any thread.
        try:
            super()._keepalive()
        except Exception as exc:  # noqa: BLE001 - as in _handle_ipmi_packet
            self._fail(exc)

    def await_login(self, done: threading.Event) -> None:
        """Run pyghmi's loop until this session's login has ended (`done` is set by the
        login callback, in whichever thread finished the login).

        hwpoller starts logins with a callback so that pyghmi's constructor returns once
        the first packet is out (see BmcSession._login), and waits here instead of in
        pyghmi's own loop. pyghmi runs every session's packet handlers in whichever thread
        happens to wait, and nothing wakes this thread when another one finished its
        login; so it waits in short slices, like awaitresponse, and gives up after
        LOGIN_LIMIT.
        """
        give_up = pyghmi_session._monotonic_time() + LOGIN_LIMIT
        try:
            while not done.is_set():
                pyghmi_session.Session.wait_for_rsp(timeout=WAIT_SLICE)
                if self._privilege_due and not self.broken:
                    self._privilege_due = False
                    super()._req_priv_level()
                if pyghmi_session._monotonic_time() > give_up and not done.is_set():
                    self._end(DeviceTimeoutError("the BMC did not finish the login"))
                    return
        finally:
            # Later logins of this session (pyghmi's own, after a timeout) run as before.
            self._login_thread = None

    def _req_priv_level(self) -> None:
        # The last login step is a command (Set Session Privilege Level) that pyghmi sends
        # and waits for inside the RAKP 4 handler, i.e. in whichever thread handled that
        # packet: another BMC's login then waited for this BMC's answer (seconds, from a
        # BMC that does not answer). It runs in this session's own login thread instead.
        if self._login_thread not in (None, threading.get_ident()):
            self._privilege_due = True
            return
        super()._req_priv_level()

    def _mark_broken(self, error: str | None = None) -> None:
        # pyghmi clears `logging` and sets `broken` (inside logout()) before it sets
        # errormsg; the login thread, waiting in another thread for `logging` to clear,
        # then read errormsg before it existed: AttributeError instead of, say, "Incorrect
        # password provided" (seen with several wrong-password logins at once). Set it first.
        # pyghmi's timeout path calls this twice, the second time without an error: keep
        # the first.
        if error is None:
            error = self.errormsg
        self.errormsg = error
        # A broken session's command in flight is over. pyghmi's logout (inside
        # _mark_broken) first waits for that command's slot, up to its whole retry budget,
        # in whichever thread breaks the session, often another BMC's, and from a retry
        # timer while holding the lock every send takes: every IPMI thread stalled.
        self.incommand = False
        super()._mark_broken(error)

    def _got_channel_auth_cap(self, response: dict[str, Any]) -> Any:
        if not self.allow_v15 and "error" not in response:
            data = response.get("data") or b""
            offers_v2 = len(data) > 3 and data[1] & 0x80 and data[3] & 0x02
            if response.get("code") == 0xCC or (response.get("code") == 0 and not offers_v2):
                self.onlogon({"error": REFUSED_V15})
                return None
        return super()._got_channel_auth_cap(response)

    def awaitresponse(self, retry: bool, netfn: int, command: int) -> None:
        """pyghmi's wait loop, without its lost-wakeup stall.

        pyghmi's I/O thread may receive the reply before this thread has queued its waiter;
        the stock loop then sleeps until the retry timer (0.5-3 s) although the reply sits
        in pktqueue. This copy checks the queue first and sleeps in short slices.
        """
        ps = pyghmi_session
        self.awaitingresponse = True
        try:
            alltimeout = ps._monotonic_time() + (self._getmaxtimeout() * 2)
            while (
                retry
                and ps.unmatched(self.lastresponse, netfn, command)
                and (self.logging or self.logged or self.onlogpayload)
            ):
                if not self.pktqueue:
                    timeout = self.expiration - ps._monotonic_time()
                    ps._io_wait(min(timeout, WAIT_SLICE), self.sockaddr)
                while self.iterwaiters:
                    self.iterwaiters.pop()({"success": True})
                self.process_pktqueue()
                if self.failure is not None:  # BmcSession.raw raises the failure itself
                    # What raw_command does after a reply, which it skips on an exception:
                    # without it, the logout that follows waited for this command's slot
                    # (up to pyghmi's whole retry budget, ~40 s).
                    self.incommand = False
                    while self.evq:
                        self.evq.popleft().set()
                    raise pyghmi_exc.IpmiException("the session failed")
                if ps._monotonic_time() > alltimeout:
                    self._mark_broken()
                    raise pyghmi_exc.IpmiException("Session no longer connected")
                with ps.util.protect(ps.WAITING_SESSIONS):
                    if self in self.waiting_sessions and self.expiration < ps._monotonic_time():
                        self.waiting_sessions.pop(self, None)
                        if not self.lastpayload and not self.logging:
                            return
                        self._timedout()
        finally:
            self.awaitingresponse = False


@dataclass(frozen=True, slots=True)
class Response:
    """An IPMI response: completion code and data bytes."""

    code: int
    data: bytes


def classify_login_error(message: str) -> DeviceError:
    """Turn pyghmi's login error text into a DeviceError with the right reason."""
    text = message.lower()
    if message == REFUSED_V15:
        return UnsupportedError(message)
    if any(hint in text for hint in _AUTH_HINTS):
        return AuthError(f"the BMC rejected the credentials ({message})")
    if any(hint in text for hint in _UNSUPPORTED_HINTS):
        return UnsupportedError(f"no acceptable cipher suite (17 or 3): {message}")
    if "timeout" in text or "no longer connected" in text:
        return DeviceTimeoutError("the BMC did not answer the login")
    if "unable to transmit" in text:
        return UnreachableError("cannot send to the BMC's address")
    if "insufficient resources" in text:
        return ProtocolError(f"the BMC has no free session: {message}")
    return ProtocolError(f"login failed: {message}")


class BmcSession:
    """A logged-in RMCP+ session; `raw` sends one command and waits for its response."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        privilege: str,
        kg: str | None = None,
        allow_v15: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self._session = self._login(host, port, username, password, privilege, kg, allow_v15)

    @staticmethod
    def _login(
        host: str,
        port: int,
        username: str,
        password: str,
        privilege: str,
        kg: str | None,
        allow_v15: bool,
    ) -> Any:
        try:
            socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
        except OSError as exc:
            raise UnreachableError(f"cannot resolve {host}: {exc.strerror or exc}") from None
        # pyghmi creates this lock lazily on the class it is called on; make sure every
        # session (base class and ours) shares the one that guards its socket pool.
        with _LOCK_INIT:
            if pyghmi_session.Session.socketchecking is None:
                pyghmi_session.Session.socketchecking = threading.Lock()
            _StrictSession.socketchecking = pyghmi_session.Session.socketchecking
        session = object.__new__(_StrictSession)
        session.allow_v15 = allow_v15
        ended: list[dict[str, Any]] = []
        done = threading.Event()

        def logged_on(outcome: dict[str, Any]) -> None:
            ended.append(outcome)
            done.set()

        try:
            with _LOGIN_START:
                # Sockets other sessions use to talk to the same address must not be shared
                # (pyghmi routes answers by address and local port). A session is listed
                # there only once it has sent its first packet: two logins to one BMC
                # started at once picked the same socket, and one of them never saw an
                # answer. So the choice and that first packet happen under one lock; with a
                # callback, pyghmi's constructor returns right after sending it.
                session.forbidsock = _sockets_in_use_for(host, port)
                session._login_thread = threading.get_ident()
                pyghmi_session.Session.__init__(
                    session, host, username, password, port, kg, logged_on, PRIVILEGES[privilege]
                )
            session.await_login(done)
        except pyghmi_exc.IpmiException as exc:
            if session.failure is not None:
                raise session.failure from None
            raise classify_login_error(str(exc)) from None
        except OSError as exc:
            raise UnreachableError(f"network error: {exc.strerror or exc}") from None
        if session.failure is not None:
            raise session.failure from None
        error = ended[0].get("error") if ended else None
        if error == GENERIC_LOGIN_ERROR and session.errormsg:
            error = session.errormsg  # what _mark_broken was told
        if error is not None:
            raise classify_login_error(str(error))
        if not session.logged or session.broken:
            raise classify_login_error(str(session.errormsg or "the login did not complete"))
        return session

    @property
    def version(self) -> str:
        """How the session was negotiated: "ipmi" (RMCP+) or "ipmiv1.5"."""
        return "ipmi" if self._session.ipmiversion >= 2.0 else "ipmiv1.5"

    @property
    def cipher_suite(self) -> int | None:
        """The negotiated RMCP+ cipher suite (17 or 3), None for IPMI 1.5."""
        if self._session.ipmiversion < 2.0:
            return None
        return CIPHER_SUITES.get(self._session.integrityalgo)

    @property
    def alive(self) -> bool:
        """False once pyghmi has given the session up."""
        session = self._session
        return bool(session.logged) and not session.broken and session.failure is None

    def raw(self, netfn: int, command: int, data: bytes = b"", lun: int = 0) -> Response:
        """Send one command; a dead session raises DeviceTimeoutError."""
        session = self._session
        if session.failure is not None:
            raise session.failure
        try:
            rsp = session.raw_command(netfn=netfn, command=command, data=tuple(data), rslun=lun)
        except pyghmi_exc.IpmiException as exc:
            if session.failure is not None:
                raise session.failure from None
            raise DeviceTimeoutError(f"the BMC stopped answering ({exc})") from None
        except (TypeError, KeyError, IndexError, AttributeError) as exc:
            # pyghmi's own state went wrong (seen after BMC restarts): treat as dead.
            raise ProtocolError(f"IPMI session failed: {type(exc).__name__}") from None
        if session.failure is not None:
            # A malformed packet for this session arrived while it waited: its state may
            # be half updated, so the answer is not trusted either.
            raise session.failure
        code = int(rsp.get("code", NO_RESPONSE))
        if code == NO_RESPONSE or rsp.get("error") == "timeout":
            raise DeviceTimeoutError("the BMC did not answer")
        return Response(code, bytes(rsp.get("data") or b""))

    def abort(self, why: str) -> None:
        """Make the command running in another thread give up now (within WAIT_SLICE),
        with DeviceTimeoutError(why): pyghmi itself retries a command for up to ~40 s, a
        thread taken from the pool all that time after its job's deadline has passed."""
        if self._session.failure is None:
            self._session.failure = DeviceTimeoutError(why)

    def close(self) -> None:
        """Log out (one Close Session, not retried) and release pyghmi's bookkeeping."""
        try:
            self._session.logout()
        except Exception:  # noqa: BLE001 - a session that cannot log out is gone anyway
            self._session.broken = True


def _sockets_in_use_for(host: str, port: int) -> list[Any]:
    """Sockets of live pyghmi sessions to this address (pyghmi's own __new__ does the same)."""
    sockets = []
    for handlers in list(pyghmi_session.Session.bmc_handlers.values()):
        for other in list(handlers.values()):
            if getattr(other, "bmc", None) == host and getattr(other, "port", None) == port:
                sockets.append(other.socket)
    return sockets
