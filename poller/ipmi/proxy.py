"""IPMI polls in a worker process: the per-target proxy driver and the worker's client.

pyghmi blocks, so IPMI runs in threads; in hwpoller's own process those threads share one
GIL with the SNMP event loop, and at scale (5,000 SNMP devices + 1,000 BMCs) neither half
then gets the CPU it needs. With `settings.ipmi_process` (the default) the IpmiDriver
objects and their thread pool live in a child process (poller.ipmi.worker) instead, and each
BMC target here has an IpmiProxy with the same Driver interface.

The client talks to the worker over a socketpair read by the event loop (add_reader), one
request id per poll. A poll the scheduler gives up on is cancelled in the worker too; an
answer that comes later is dropped. A DeviceError raised in the worker is raised here as the
same class with the same message. When the worker exits, or stops answering for
HANG_TIMEOUT seconds (then it is killed), every poll in flight fails with IpmiWorkerError
and the next poll after a backoff (RESTART_DELAY doubling to MAX_RESTART_DELAY) starts a new
worker; its targets log in again on their next polls. Credentials go to the worker inside
the PollSpec, over the private socket only, and never into a log line or an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from poller.driver import Driver, DriverContext, PollSpec
from poller.errors import DeviceError
from poller.ipmi import IpmiResource
from poller.ipmi.channel import decode_frames, encode
from poller.model import DeviceData

if TYPE_CHECKING:
    from poller.profiles import LoadedProfile, ProfileSet

log = logging.getLogger("hwpoller.ipmi.worker")

# A worker that sends nothing (not even its heartbeat, every channel.BEAT s) this long is
# hung: it is killed and replaced.
HANG_TIMEOUT = 30.0
# After a worker ends, the next one starts no sooner than this, doubling per failure...
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 60.0
# ... and a worker that ran this long resets the doubling.
STABLE_AFTER = 60.0
# How long stopping waits for the worker to exit after its socket closed, before SIGKILL.
STOP_TIMEOUT = 3.0
# How long closing one target waits for the worker's logout.
CLOSE_TIMEOUT = 10.0
# glibc gives each thread that mallocs its own arena (up to 8 per core); the worker's
# pyghmi threads would each keep one. Two arenas cost no measurable time here.
WORKER_ENV = {"MALLOC_ARENA_MAX": "2"}


class IpmiWorkerError(DeviceError):
    """The IPMI worker process failed (not the BMC): exited, hung, or restarting."""

    reason = "internal"


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


class WorkerClient:
    """hwpoller's end of one IPMI worker at a time: starts it, restarts it, stops it."""

    hang_timeout = HANG_TIMEOUT

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._in = bytearray()
        self._out = bytearray()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._opened: set[int] = set()  # driver keys the running worker has
        self._ids = itertools.count(1)
        self._profiles: list[LoadedProfile] | None = None
        self._profiles_from: ProfileSet | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._heard = False
        self._started_at: float | None = None  # monotonic time of the last start
        self._failures = 0
        self._retry_at: float | None = None  # no new worker before then (after a crash)
        self._ended = ""  # why the last worker ended, for polls during the restart delay
        self._closed = False
        self._level = logging.NOTSET  # the log level the worker was last told
        self._loop: asyncio.AbstractEventLoop | None = None
        self.starts = 0  # workers started, for tests and the benchmark

    @property
    def pid(self) -> int | None:
        """The running worker's process id."""
        return self._proc.pid if self._proc is not None else None

    # -- starting and losing the worker ------------------------------------------------

    def _ensure_started(self) -> None:
        if self._proc is not None:
            return
        if self._closed:
            raise IpmiWorkerError("the IPMI worker has been stopped")
        wait = self._retry_at - time.monotonic() if self._retry_at is not None else 0.0
        if wait > 0:
            raise IpmiWorkerError(f"{self._ended}; a new one starts in {wait:.0f}s")
        self._start()

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            env = {**WORKER_ENV, **os.environ}  # an operator's own setting wins
            fd = child.fileno()
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "poller.ipmi.worker", str(fd)],
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
            )
        except OSError as exc:
            parent.close()
            self._note_end(f"IPMI worker could not start ({exc.strerror or exc})")
            raise IpmiWorkerError(self._ended) from None
        finally:
            child.close()
        parent.setblocking(False)
        self._sock = parent
        self._in.clear()
        self._out.clear()
        self._opened.clear()
        self._started_at = time.monotonic()
        self.starts += 1
        self._loop = loop
        loop.add_reader(parent.fileno(), self._readable)
        self._heard = True
        self._watchdog = loop.create_task(self._watch(parent), name="ipmi-worker-watchdog")
        self._level = logging.getLogger().getEffectiveLevel()
        self._send(("hello", self.threads, self._level))
        if self._profiles is not None:
            self._send(("profiles", self._profiles))
        log.debug("IPMI worker started (pid %d)", self._proc.pid)

    def _note_end(self, why: str) -> None:
        """Remember why the worker ended and when the next may start."""
        now = time.monotonic()
        if self._started_at is not None and now - self._started_at > STABLE_AFTER:
            self._failures = 0
        self._failures += 1
        delay = min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** (self._failures - 1))
        self._retry_at = now + delay
        self._ended = why
        if not self._closed:
            log.error("%s; a new one starts in %.0fs, on the next IPMI poll", why, delay)

    def _detach(self) -> subprocess.Popen[bytes] | None:
        """Forget the running worker (socket, reader, watchdog); return its process."""
        proc, sock, self._proc, self._sock = self._proc, self._sock, None, None
        if sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
                self._loop.remove_writer(sock.fileno())
            sock.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._opened.clear()
        return proc

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(IpmiWorkerError(why))

    def _lost(self, what: str, kill: bool = False) -> None:
        """The worker ended or must end: reap it, fail what was in flight, back off."""
        proc = self._detach()
        if proc is None:
            return
        if kill:
            with contextlib.suppress(OSError):
                proc.kill()
        try:
            code = proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        why = f"IPMI worker {what} ({_exit_text(code)})"
        self._note_end(why)
        self._fail_pending(why)

    async def _watch(self, sock: socket.socket) -> None:
        """Kill the worker when it has been silent for hang_timeout seconds of our time."""
        silent = 0.0
        while self._sock is sock:
            started = time.monotonic()
            await asyncio.sleep(1.0)
            # A stalled event loop here is not the worker's silence: count at most 2 s a tick.
            step = min(time.monotonic() - started, 2.0)
            if self._heard:
                self._heard, silent = False, 0.0
            else:
                silent += step
            if silent > self.hang_timeout and self._sock is sock:
                self._watchdog = None  # this task ends here; _lost must not cancel it
                self._lost(f"hung (no answer for {silent:.0f}s), killed", kill=True)
                return

    # -- the channel -------------------------------------------------------------------

    def _send(self, message: tuple[Any, ...]) -> None:
        sock = self._sock
        if sock is None:
            raise IpmiWorkerError(self._ended or "the IPMI worker is not running")
        frame = encode(message)
        if self._out:
            self._out += frame
            return
        try:
            sent = sock.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._lost(f"is gone ({exc.strerror or exc})")
            raise IpmiWorkerError(self._ended) from None
        if sent < len(frame):
            self._out += frame[sent:]
            asyncio.get_running_loop().add_writer(sock.fileno(), self._writable)

    def _writable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sent = sock.send(self._out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(f"is gone ({exc.strerror or exc})")
            return
        del self._out[:sent]
        if not self._out:
            asyncio.get_running_loop().remove_writer(sock.fileno())

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(1 << 18)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost("exited")
            return
        self._heard = True
        self._in += data
        try:
            messages = decode_frames(self._in)
        except Exception as exc:  # noqa: BLE001 - a corrupt stream: the worker is broken
            self._lost(f"sent a corrupt message ({type(exc).__name__}), killed", kill=True)
            return
        for message in messages:
            self._dispatch(message)

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind in ("ok", "error", "closed"):
            future = self._pending.pop(message[1], None)
            if future is None or future.done():
                return  # an answer to a poll the scheduler gave up on
            if kind == "error":
                future.set_exception(message[2])
            else:
                future.set_result(message[2] if kind == "ok" else None)
        elif kind == "log":
            _, level, name, text = message
            logging.getLogger(name).log(level, "%s", text)

    # -- what proxies ask --------------------------------------------------------------

    def _ensure_profiles(self, profiles: ProfileSet) -> None:
        if profiles is self._profiles_from:
            return
        self._profiles_from = profiles
        ipmi = profiles.of_protocol("ipmi")
        if self._profiles is not None and [(p.name, p.spec) for p in ipmi] == [
            (p.name, p.spec) for p in self._profiles
        ]:
            return
        self._profiles = ipmi
        self._send(("profiles", ipmi))

    async def poll(self, key: int, spec: PollSpec, profiles: ProfileSet) -> DeviceData:
        """Poll the target `key` in the worker (opening its driver there first)."""
        self._ensure_started()
        self._ensure_profiles(profiles)
        level = logging.getLogger().getEffectiveLevel()
        if level != self._level:  # settings.log_level changed on reload
            self._level = level
            self._send(("level", level))
        if key not in self._opened:
            self._send(("open", key, spec))
            self._opened.add(key)
        request = next(self._ids)
        self._send(("poll", request, key))  # raises, registering nothing, if the worker is gone
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request] = future
        try:
            data = await future
        except asyncio.CancelledError:
            if self._pending.pop(request, None) is not None and self._sock is not None:
                with contextlib.suppress(IpmiWorkerError):
                    self._send(("cancel", request))
            raise
        if not isinstance(data, DeviceData):  # pragma: no cover - a wiring bug
            raise IpmiWorkerError(f"IPMI worker answered with {type(data).__name__}")
        return data

    async def close_driver(self, key: int) -> None:
        """Close the target's driver in the worker (its BMC logout), if it has one."""
        if key not in self._opened or self._sock is None:
            return
        self._opened.discard(key)
        request = next(self._ids)
        try:
            self._send(("close", request, key))
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending[request] = future
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await future
        except (TimeoutError, IpmiWorkerError):
            log.debug("IPMI worker did not confirm a target's logout")
        finally:
            self._pending.pop(request, None)

    def close(self) -> None:
        """Stop the worker: close its socket (it logs out and exits), reap it."""
        self._closed = True
        sock = self._sock
        if sock is not None and self._out:
            with contextlib.suppress(OSError):
                sock.setblocking(True)
                sock.settimeout(1.0)
                sock.sendall(self._out)
        proc = self._detach()
        if proc is not None:
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("IPMI worker did not exit in %.0fs; killed", STOP_TIMEOUT)
                proc.kill()
                proc.wait()
        self._fail_pending("the IPMI worker was stopped")


class IpmiProxy:
    """The Driver of one BMC target whose IpmiDriver runs in the worker process."""

    _keys = itertools.count(1)

    def __init__(self, spec: PollSpec, context: DriverContext, client: WorkerClient) -> None:
        self.spec = spec
        self._context = context
        self._client = client
        self._key = next(self._keys)

    async def poll(self) -> DeviceData:
        """Poll the BMC in the worker."""
        return await self._client.poll(self._key, self.spec, self._context.profiles)

    async def close(self) -> None:
        """Log out of the BMC (in the worker)."""
        await self._client.close_driver(self._key)


def make_driver(spec: PollSpec, context: DriverContext) -> Driver:
    """The IPMI driver factory: a proxy to the worker process when settings.ipmi_process
    is on (the default), else the in-process IpmiDriver."""
    resource = context.resource("ipmi", IpmiResource)
    if resource.process:
        return IpmiProxy(spec, context, resource.worker)
    from poller.ipmi.driver import IpmiDriver  # noqa: PLC0415 - pyghmi only when used

    return IpmiDriver(spec, context)
