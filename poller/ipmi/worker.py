"""The IPMI worker process: hosts the real IpmiDriver objects and their thread pool.

    python -m poller.ipmi.worker FD

hwpoller starts it (poller.ipmi.proxy.WorkerClient) with its own interpreter and one end of
a socketpair as FD; messages are described in poller.ipmi.channel. pyghmi's blocking calls
and their threads then share this process's GIL, not the SNMP event loop's. Log records
are sent to hwpoller, which logs them as its own. The worker ends when the socket closes
(hwpoller stopped, or died): it logs out of every BMC it still has a session with, briefly,
and exits without waiting for threads hung in pyghmi.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import sys
import threading
import traceback
from typing import Any

from poller.config import Settings
from poller.driver import DriverContext, PollSpec
from poller.errors import DeviceError
from poller.ipmi.channel import BEAT, HEADER, MAX_FRAME, encode, portable_error
from poller.ipmi.driver import IpmiDriver
from poller.model import DeviceData
from poller.profiles import LoadedProfile, ProfileSet

log = logging.getLogger("hwpoller.ipmi.worker")

# How long the worker spends logging out of leftover sessions when hwpoller goes away.
EXIT_CLOSE_TIMEOUT = 1.5


class _Forward(logging.Handler):
    """Sends log records to hwpoller over the channel; from any thread."""

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self._worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            self._worker.send_threadsafe(("log", record.levelno, record.name, text))
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class Worker:
    """One end of the channel: reads requests, runs them as tasks, writes answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._context: DriverContext | None = None
        self._drivers: dict[int, IpmiDriver] = {}
        self._polls: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._gone = False  # the other end closed: nothing more is sent

    # -- sending -----------------------------------------------------------------------

    def send(self, message: tuple[Any, ...]) -> None:
        """Queue one message (on the event loop's thread)."""
        if self._gone or self._writer.is_closing():
            return
        try:
            frame = encode(message)
        except Exception as exc:  # noqa: BLE001 - an unpicklable answer must still answer
            if message[0] in ("ok", "error"):
                frame = encode(("error", message[1], portable_error(exc)))
            else:
                return
        self._writer.write(frame)

    def send_threadsafe(self, message: tuple[Any, ...]) -> None:
        """send() from any thread (log records come from pyghmi's threads too)."""
        if threading.get_ident() == self._loop_thread:
            self.send(message)
        elif not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                self._loop.call_soon_threadsafe(self.send, message)

    async def _beat(self) -> None:
        while True:
            self.send(("beat",))
            await self._writer.drain()
            await asyncio.sleep(BEAT)

    # -- requests ----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _hello(self, threads: int, level: int) -> None:
        logging.getLogger().setLevel(level)
        settings = Settings.model_validate({"ipmi_threads": threads, "ipmi_process": False})
        self._context = DriverContext(ProfileSet({}), settings)
        log.debug("IPMI worker ready (pid %d, %d threads)", os.getpid(), threads)

    def _profiles(self, profiles: list[LoadedProfile]) -> None:
        if self._context is not None:
            self._context.profiles = ProfileSet({p.name: p for p in profiles})

    def _open(self, key: int, spec: PollSpec) -> None:
        if self._context is None:
            raise RuntimeError("open before hello")
        old = self._drivers.pop(key, None)
        if old is not None:
            self._spawn(old.close())
        self._drivers[key] = IpmiDriver(spec, self._context)

    async def _poll_driver(self, key: int) -> DeviceData:
        driver = self._drivers.get(key)
        if driver is None:
            raise DeviceError("the IPMI worker has no driver for this target")
        return await driver.poll()

    async def _poll(self, request: int, key: int) -> None:
        try:
            data = await self._poll_driver(key)
        except asyncio.CancelledError:
            raise  # hwpoller cancelled it: nobody waits for an answer
        except DeviceError as exc:
            self.send(("error", request, portable_error(exc)))
        except Exception as exc:
            log.exception("unexpected error while polling a BMC")
            self.send(("error", request, portable_error(exc)))
        else:
            self.send(("ok", request, data))
        finally:
            self._polls.pop(request, None)

    async def _close(self, request: int, key: int) -> None:
        driver = self._drivers.pop(key, None)
        try:
            if driver is not None:
                await driver.close()
        except Exception as exc:  # noqa: BLE001 - a failed logout is still a close
            log.debug("error while closing a BMC session: %r", exc)
        finally:
            self.send(("closed", request))

    def handle(self, message: tuple[Any, ...]) -> None:
        """Act on one message from hwpoller."""
        kind = message[0]
        if kind == "poll":
            _, request, key = message
            self._polls[request] = self._spawn(self._poll(request, key))
        elif kind == "cancel":
            task = self._polls.pop(message[1], None)
            if task is not None:
                task.cancel()
        elif kind == "open":
            self._open(message[1], message[2])
        elif kind == "close":
            self._spawn(self._close(message[1], message[2]))
        elif kind == "profiles":
            self._profiles(message[1])
        elif kind == "level":
            logging.getLogger().setLevel(message[1])
            log.debug("IPMI worker log level now %s", logging.getLevelName(message[1]))
        elif kind == "hello":
            self._hello(message[1], message[2])
        else:
            log.error("unknown message %r from hwpoller", kind)

    async def serve(self) -> None:
        """Handle messages until hwpoller closes its end, then clean up."""
        beat = asyncio.create_task(self._beat())
        try:
            while True:
                try:
                    header = await self._reader.readexactly(HEADER.size)
                    (size,) = HEADER.unpack(header)
                    if size > MAX_FRAME:
                        raise ValueError(f"frame of {size} bytes")
                    body = await self._reader.readexactly(size)
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                self.handle(pickle.loads(body))  # noqa: S301 - from our own parent
        finally:
            beat.cancel()
            self._gone = True
            await self._shutdown()

    async def _shutdown(self) -> None:
        """hwpoller is gone: stop polls, log out of the BMCs still open (briefly)."""
        for task in list(self._polls.values()):
            task.cancel()
        closing = [asyncio.create_task(d.close()) for d in self._drivers.values()]
        self._drivers.clear()
        if closing:
            await asyncio.wait(closing, timeout=EXIT_CLOSE_TIMEOUT)
        if self._context is not None:
            self._context.shutdown()


async def _main(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_connection(sock=sock)
    worker = Worker(reader, writer)
    root = logging.getLogger()
    root.handlers[:] = [_Forward(worker)]
    await worker.serve()
    with contextlib.suppress(Exception):
        writer.close()


def main(argv: list[str]) -> None:
    """Serve hwpoller on the inherited socket FD (argv[1]); exit when it closes."""
    # Ctrl-C, SIGHUP and a stop's SIGTERM reach the whole process group (or cgroup):
    # hwpoller handles them (shutdown, reload), and this process lives exactly as long as
    # hwpoller's end of the socket, which closes when hwpoller stops or dies.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    fd = int(argv[1])
    try:
        asyncio.run(_main(fd))
    finally:
        # Threads blocked in pyghmi must not keep the process alive.
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
