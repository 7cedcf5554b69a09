"""The wire between hwpoller and its IPMI worker process: length-prefixed pickled messages.

Both ends are hwpoller's own code (the worker is our child, started with our interpreter),
so pickle is safe here; the stream is a private socketpair, never a network socket.

Messages are tuples whose first item names them:

    main -> worker   ("hello", threads, log_level)      first, once
                     ("profiles", [LoadedIpmiProfile])  before the first open, and on change
                     ("open", key, PollSpec)            create the driver of one target
                     ("poll", request_id, key)          poll it once
                     ("cancel", request_id)             the scheduler gave up on that poll
                     ("close", request_id, key)         log out and forget the driver
                     ("level", levelno)                 hwpoller's log level changed
    worker -> main   ("ok", request_id, DeviceData)
                     ("error", request_id, exception)   a DeviceError as raised, or a stand-in
                     ("closed", request_id)
                     ("log", levelno, logger name, text)
                     ("beat",)                          every BEAT seconds: the worker lives
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

from poller.errors import DeviceError

HEADER = struct.Struct("!I")
# A DeviceData of a few hundred readings is a few tens of KiB; anything near this is a bug.
MAX_FRAME = 64 << 20
# How often the worker says it is alive.
BEAT = 1.0


class FrameError(Exception):
    """The stream is corrupt (a frame longer than MAX_FRAME)."""


def encode(message: tuple[Any, ...]) -> bytes:
    """One frame: the pickled message behind its length."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def decode_frames(buffer: bytearray) -> list[Any]:
    """Take every complete frame off the front of `buffer` and return their messages."""
    out = []
    offset = 0
    while len(buffer) - offset >= HEADER.size:
        (size,) = HEADER.unpack_from(buffer, offset)
        if size > MAX_FRAME:
            raise FrameError(f"frame of {size} bytes")
        end = offset + HEADER.size + size
        if len(buffer) < end:
            break
        out.append(pickle.loads(memoryview(buffer)[offset + HEADER.size : end]))  # noqa: S301 - our own child
        offset = end
    del buffer[:offset]
    return out


def portable_error(exc: BaseException) -> BaseException:
    """An exception that pickles and means the same in the main process.

    A DeviceError is sent as it is (same subclass, same message) when it pickles, else
    rebuilt from its class and message. Anything else is a bug in the worker: it arrives as
    a RuntimeError naming the class (the traceback is logged by the worker).
    """
    if isinstance(exc, DeviceError):
        try:
            pickle.loads(pickle.dumps(exc))  # noqa: S301 - round trip of our own object
        except Exception:  # noqa: BLE001 - any pickling failure means: rebuild it
            try:
                return type(exc)(str(exc))
            except Exception:  # noqa: BLE001 - a subclass with another constructor
                return DeviceError(str(exc))
        return exc
    return RuntimeError(f"IPMI worker: {type(exc).__name__}: {exc}")
