"""The presence probes of `hwpoller discover`: the cheapest question a device of each
protocol answers, and nothing more.

SNMP: a GET of sysDescr, sysObjectID and sysName (an agent answers only its community, so
found means "polls with these credentials"). IPMI: the pre-session Get Channel
Authentication Capabilities over RMCP (no login). Redfish: a GET of the unauthenticated
service root /redfish/v1/ (no credentials sent, redirects not followed, so the scan never
leaves the addresses given). What a found device is, is decided later by the real drivers
(poller.discover.detect).

The UDP probes of one protocol share one socket and are matched by request id or source
address; a silent address costs one timer, not a file descriptor.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from poller.snmp import ber

# Redfish probes in flight at once (the scanner's window is the same).
MAX_CONNECTIONS = 1024
# A service root is a few KiB; a bigger answer is not one, and is not read further.
MAX_ROOT_BYTES = 256 * 1024
# Identity strings a device sends are shown and written as comments: keep them short.
MAX_IDENTITY = 200

SYS_DESCR, SYS_OBJECT_ID, SYS_NAME = "1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.5.0"
_SNMP_KEYS = {
    ber.oid_contents(ber.parse_oid(SYS_DESCR)): "sysDescr",
    ber.oid_contents(ber.parse_oid(SYS_OBJECT_ID)): "sysObjectID",
    ber.oid_contents(ber.parse_oid(SYS_NAME)): "sysName",
}

RMCP_IPMI = b"\x06\x00\xff\x07"  # RMCP 1.0, sequence 255 (no RMCP ACK), class IPMI
NETFN_APP, CMD_GET_CHANNEL_AUTH_CAPS = 0x06, 0x38
BMC_ADDRESS, SOFTWARE_ID = 0x20, 0x81
PRIVILEGES = {"callback": 1, "user": 2, "operator": 3, "administrator": 4}


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    """Where a device answered: protocol, IPv4 address and port."""

    protocol: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Found:
    """A device that answered its protocol's probe, with what the answer said of it."""

    endpoint: Endpoint
    identity: Mapping[str, str] = field(default_factory=dict)


class Probe(Protocol):
    """One protocol's presence probe."""

    protocol: str
    ports: tuple[int, ...]

    async def open(self) -> None:
        """Create what the probes share (a socket, an HTTP client)."""
        ...

    async def probe(self, host: str, port: int, seconds: float) -> Found | None:
        """Ask one address; None when nothing (valid) answered within `seconds`."""
        ...

    async def close(self) -> None:
        """Release the socket or client."""
        ...


def clean(text: str, limit: int = MAX_IDENTITY) -> str:
    """Device-supplied text made safe to print and to put in a YAML comment: printable
    characters only (a newline in a sysDescr must not start a line of config), shortened."""
    out = "".join(c if c.isprintable() else " " for c in text).strip()
    return out if len(out) <= limit else out[: limit - 3] + "..."


class _Datagrams(asyncio.DatagramProtocol):
    """Hands every datagram of a shared, unconnected probe socket to a callback."""

    def __init__(self, received: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._received = received

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        """Pass the datagram on."""
        self._received(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        """ICMP errors: the probe concerned simply times out."""


class _UdpProbe:
    """A shared UDP socket and the futures of the probes waiting on it."""

    protocol = ""

    def __init__(self, ports: Sequence[int]) -> None:
        self.ports = tuple(ports)
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[object, tuple[tuple[str, int], asyncio.Future[bytes]]] = {}

    async def open(self) -> None:
        """Bind the shared socket (any port, every local address)."""
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self._received),
            local_addr=("0.0.0.0", 0),  # noqa: S104 - any local end
        )

    async def _ask(self, key: object, packet: bytes, host: str, port: int, seconds: float) -> bytes:
        """Send one request and wait for the answer filed under `key` (TimeoutError)."""
        if self._transport is None:
            raise RuntimeError("probe not opened")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[key] = ((host, port), future)
        try:
            self._transport.sendto(packet, (host, port))
            async with asyncio.timeout(seconds):
                return await future
        finally:
            self._pending.pop(key, None)

    def _answer(self, key: object, source: tuple[str, int], data: bytes) -> None:
        """Complete the probe filed under `key`, if it was sent to where this came from."""
        entry = self._pending.get(key)
        if entry is not None and entry[0] == source and not entry[1].done():
            entry[1].set_result(data)

    def _received(self, data: bytes, source: tuple[str, int]) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Close the shared socket."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class SnmpProbe(_UdpProbe):
    """SNMPv1/v2c GET of sysDescr, sysObjectID and sysName with the given community."""

    protocol = "snmp"

    def __init__(self, community: str, version: str, ports: Sequence[int]) -> None:
        super().__init__(ports)
        self._community = community.encode()
        self._version = 0 if version == "1" else 1
        self._varbinds = ber.null_varbinds(list(_SNMP_KEYS))
        # Request ids from a random start, as every SNMP client does, so that a stray
        # answer to an earlier scan is not taken for this one's.
        self._ids = itertools.count(random.randrange(1, 1 << 30))

    async def probe(self, host: str, port: int, seconds: float) -> Found | None:
        """Ask one agent for its system group."""
        request_id = next(self._ids) & 0x7FFFFFFF
        packet = ber.request(self._version, self._community, ber.GET, request_id, 0, 0,
                             self._varbinds)  # fmt: skip
        try:
            data = await self._ask(request_id, packet, host, port, seconds)
        except TimeoutError:
            return None
        parsed = ber.parse_response(data, self._version)
        if parsed is None:  # pragma: no cover - filtered in _received
            return None
        identity: dict[str, str] = {}
        for name, _tag, value in parsed[3]:
            key = _SNMP_KEYS.get(name)
            if key is None or value is None:
                continue
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            identity[key] = clean(text)
        return Found(Endpoint(self.protocol, host, port), identity)

    def _received(self, data: bytes, source: tuple[str, int]) -> None:
        try:
            parsed = ber.parse_response(data, self._version)
        except ber.MalformedError:
            return  # not SNMP: whatever else listens on that port
        if parsed is not None:
            self._answer(parsed[0], source, data)


def _checksum(data: bytes) -> int:
    """IPMI two's-complement checksum."""
    return -sum(data) & 0xFF


def auth_caps_request(privilege: int, sequence: int = 0) -> bytes:
    """Get Channel Authentication Capabilities in IPMI 1.5 framing (session-less, as every
    BMC accepts before a login), asking for the IPMI 2.0 extended data (IPMI v2.0 22.13)."""
    head = bytes([BMC_ADDRESS, NETFN_APP << 2])
    # 0x8E: bit 7 asks for IPMI 2.0 data; channel 0xE is "this channel".
    body = bytes([SOFTWARE_ID, (sequence & 0x3F) << 2, CMD_GET_CHANNEL_AUTH_CAPS, 0x8E, privilege])
    message = head + bytes([_checksum(head)]) + body + bytes([_checksum(body)])
    return RMCP_IPMI + b"\x00" + bytes(8) + bytes([len(message)]) + message


def parse_auth_caps(data: bytes) -> dict[str, str] | None:
    """What a Get Channel Authentication Capabilities answer says; None if it is not one."""
    if len(data) < 5 or data[0] != 0x06 or data[3] & 0x1F != 0x07:
        return None
    if data[4] == 0x00 and len(data) >= 14:  # IPMI 1.5 session header
        message = data[14 : 14 + data[13]]
    elif data[4] == 0x06 and len(data) >= 16:  # RMCP+ header, from BMCs answering in kind
        (length,) = struct.unpack_from("<H", data, 14)
        message = data[16 : 16 + length]
    else:
        return None
    if len(message) < 8 or _checksum(message[:2]) != message[2]:
        return None
    if _checksum(message[3:-1]) != message[-1]:
        return None
    if message[1] >> 2 != NETFN_APP + 1 or message[5] != CMD_GET_CHANNEL_AUTH_CAPS:
        return None
    code, caps = message[6], message[7:-1]
    if code != 0 or len(caps) < 4:
        # An error code is still a BMC answering; it says nothing of its capabilities.
        return {"ipmi": f"answered (completion code 0x{code:02x})"}
    rmcp_plus = bool(caps[1] & 0x80 and caps[3] & 0x02)
    return {"ipmi": "2.0 (RMCP+)" if rmcp_plus else "1.5 only"}


class IpmiProbe(_UdpProbe):
    """RMCP Get Channel Authentication Capabilities: is an IPMI BMC listening?"""

    protocol = "ipmi"

    def __init__(self, ports: Sequence[int], privilege: str = "user") -> None:
        super().__init__(ports)
        self._packet = auth_caps_request(PRIVILEGES.get(privilege, 2))

    async def probe(self, host: str, port: int, seconds: float) -> Found | None:
        """Ask one address for its channel's authentication capabilities."""
        try:
            data = await self._ask((host, port), self._packet, host, port, seconds)
        except TimeoutError:
            return None
        identity = parse_auth_caps(data)
        return Found(Endpoint(self.protocol, host, port), identity or {})

    def _received(self, data: bytes, source: tuple[str, int]) -> None:
        if parse_auth_caps(data) is not None:
            self._answer(source, source, data)


class RedfishProbe:
    """GET /redfish/v1/ (the unauthenticated service root) over http or https."""

    protocol = "redfish"

    def __init__(self, scheme: str, ports: Sequence[int]) -> None:
        self.scheme = scheme
        self.ports = tuple(ports)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        """Create the HTTP client: no certificate check (no credentials are sent, only the
        root is read), no proxies from the environment, one connection per probe."""
        connector = aiohttp.TCPConnector(ssl=False, force_close=True, limit=MAX_CONNECTIONS)
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False)

    async def probe(self, host: str, port: int, seconds: float) -> Found | None:
        """Read one address's service root, if it serves one."""
        if self._session is None:
            raise RuntimeError("probe not opened")
        url = f"{self.scheme}://{host}:{port}/redfish/v1/"
        try:
            async with asyncio.timeout(seconds):
                async with self._session.get(
                    url, allow_redirects=False, headers={"Accept": "application/json"}
                ) as response:
                    if response.status != 200:
                        return None
                    body = await response.content.read(MAX_ROOT_BYTES + 1)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return None
        if len(body) > MAX_ROOT_BYTES:
            return None
        try:
            root = json.loads(body)
        except (ValueError, RecursionError):
            return None
        if not isinstance(root, dict):
            return None
        odata = str(root.get("@odata.id", "")).rstrip("/")
        if "RedfishVersion" not in root and odata != "/redfish/v1":
            return None
        identity = {
            key: clean(str(root[key]))
            for key in ("Name", "Vendor", "Product", "RedfishVersion", "UUID")
            if isinstance(root.get(key), str | int | float) and str(root[key]).strip()
        }
        return Found(Endpoint(self.protocol, host, port), identity)

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._session is not None:
            await self._session.close()
            self._session = None
