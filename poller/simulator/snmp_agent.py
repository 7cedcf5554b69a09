"""A pysnmp 7 (asyncio) SNMP v1/v2c agent whose MIB is a live view of a simulated device.

pysnmp's command responders call the context's MIB instrumentation synchronously
(read_variables / read_next_variables); instead of a compiled MIB tree, `LiveMib` answers
from a table the device renders from the room model. The table is rebuilt only when the
model has moved on, so the many GETNEXTs of one GETBULK see one consistent snapshot.
The engine is built once per device and lives as long as the device.
"""

from __future__ import annotations

import bisect
import socket
from collections.abc import Callable, Mapping
from typing import Any

from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config, engine
from pysnmp.entity.rfc3413 import cmdrsp, context
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.smi import error as smi_error

Oid = tuple[int, ...]
# A device renders its objects as {OID: pysnmp value}, given nothing; `version` tells
# whether the last rendering is still current.
Render = Callable[[], Mapping[Oid, Any]]


def oid(text: str) -> Oid:
    """ "1.3.6.1..." -> (1, 3, 6, 1, ...)."""
    return tuple(int(part) for part in text.strip(".").split("."))


class LiveMib:
    """MIB instrumentation answering GET/GETNEXT from a rendered snapshot (read-only)."""

    def __init__(self, render: Render, version: Callable[[], object]) -> None:
        self._render = render
        self._version = version
        self._seen: object = object()
        self._values: Mapping[Oid, Any] = {}
        self._keys: list[Oid] = []

    def _snapshot(self) -> tuple[Mapping[Oid, Any], list[Oid]]:
        version = self._version()
        if version != self._seen:
            self._values = self._render()
            self._keys = sorted(self._values)
            self._seen = version
        return self._values, self._keys

    def read_variables(self, *var_binds: Any, **_context: Any) -> list[tuple[Any, Any]]:
        """GET: the value of each requested instance, or noSuchObject/noSuchInstance."""
        values, keys = self._snapshot()
        out = []
        for name, _ in var_binds:
            key = tuple(name)
            if key in values:
                out.append((name, values[key]))
                continue
            # noSuchObject when no instance of the object (its parent OID) exists at all.
            pos = bisect.bisect_left(keys, key[:-1])
            known = pos < len(keys) and keys[pos][: len(key) - 1] == key[:-1]
            out.append((name, rfc1905.noSuchInstance if known else rfc1905.noSuchObject))
        return out

    def read_next_variables(self, *var_binds: Any, **_context: Any) -> list[tuple[Any, Any]]:
        """GETNEXT (and each GETBULK repetition): the next instance in OID order."""
        values, keys = self._snapshot()
        out = []
        for name, _ in var_binds:
            pos = bisect.bisect_right(keys, tuple(name))
            if pos < len(keys):
                out.append((rfc1902.ObjectName(keys[pos]), values[keys[pos]]))
            else:
                out.append((name, rfc1905.endOfMibView))
        return out

    def write_variables(self, *var_binds: Any, **_context: Any) -> list[tuple[Any, Any]]:
        """SET is refused: a monitoring card's sensors are read-only."""
        raise smi_error.NotWritableError(name=var_binds[0][0] if var_binds else None, idx=0)


def bind_udp(host: str, port: int) -> socket.socket:
    """A UDP socket bound to host:port (port 0: any free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class SnmpAgent:
    """One SNMP agent on its own UDP port, answering one community from a LiveMib."""

    def __init__(self, sock: socket.socket, community: str, mib: LiveMib) -> None:
        self.host, self.port = sock.getsockname()[:2]
        self._sock = sock
        self._community = community
        self._mib = mib
        self._engine: Any = None

    @property
    def sock(self) -> socket.socket:
        """The agent's UDP socket (notifications leave from it too)."""
        return self._sock

    def start(self) -> None:
        """Register the engine's transport on the running asyncio loop."""
        snmp_engine = engine.SnmpEngine()
        transport = udp.UdpTransport().open_server_mode(sock=self._sock)
        config.add_transport(snmp_engine, udp.DOMAIN_NAME, transport)
        config.add_v1_system(snmp_engine, "simulated-area", self._community)
        snmp_context = context.SnmpContext(snmp_engine)
        snmp_context.unregister_context_name(b"")
        snmp_context.register_context_name(b"", self._mib)
        for responder in (
            cmdrsp.GetCommandResponder,
            cmdrsp.NextCommandResponder,
            cmdrsp.BulkCommandResponder,
            cmdrsp.SetCommandResponder,
        ):
            responder(snmp_engine, snmp_context)
        self._engine = snmp_engine

    def stop(self) -> None:
        """Close the transport and release the engine."""
        if self._engine is not None:
            self._engine.close_dispatcher()
            self._engine = None
        self._sock.close()
