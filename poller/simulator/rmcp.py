"""A minimal RMCP+ (IPMI v2.0 LAN) server side: sessions, RAKP, integrity and AES.

pyghmi's own BMC server does not complete an RMCP+ session, so the simulated BMCs use this.
It implements what ipmitool (`-I lanplus`) and pyghmi need, after IPMI v2.0 section 13:

- RMCP/ASF presence ping -> pong;
- pre-session Get Channel Authentication Capabilities (IPMI 1.5 or 2.0 framing) and Get
  Channel Cipher Suites, advertising IPMI 2.0 only;
- Open Session, RAKP 1-4 with RAKP-HMAC-SHA1 (cipher suite 3: HMAC-SHA1-96 integrity,
  AES-CBC-128) and RAKP-HMAC-SHA256 (suite 17: HMAC-SHA256-128, AES-CBC-128); suites 2
  and 16 (integrity without encryption) are accepted too; suite 0 and IPMI 1.5 are not;
- authenticated sessions with sequence numbers, Set Session Privilege Level and Close
  Session; every other command goes to the BMC's handler.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

log = logging.getLogger("hwpoller.simulator.rmcp")

RMCP_HEADER = b"\x06\x00\xff\x07"
ASF_IANA = b"\x00\x00\x11\xbe"
NETFN_APP = 0x06
CMD_GET_CHANNEL_AUTH_CAPS, CMD_GET_CIPHER_SUITES = 0x38, 0x54
CMD_SET_SESSION_PRIV, CMD_CLOSE_SESSION, CMD_GET_SYSTEM_GUID = 0x3B, 0x3C, 0x37
PT_IPMI, PT_OPEN_REQ, PT_OPEN_RSP = 0x00, 0x10, 0x11
PT_RAKP1, PT_RAKP2, PT_RAKP3, PT_RAKP4 = 0x12, 0x13, 0x14, 0x15
# RMCP+ status codes (IPMI v2.0 table 13-15).
ST_INVALID_SESSION, ST_INVALID_ROLE, ST_UNAUTHORIZED_NAME = 0x02, 0x09, 0x0D
ST_BAD_ICV, ST_NO_CIPHER_MATCH, ST_NO_RESOURCES = 0x0F, 0x11, 0x01
# (authentication, integrity) algorithm pairs: SHA-1 (suites 2, 3), SHA-256 (16, 17).
HASHES: dict[tuple[int, int], Any] = {(1, 1): hashlib.sha1, (3, 4): hashlib.sha256}
ICV_LENGTH = {1: 12, 4: 16}
# Get Channel Cipher Suites records: start of record, suite id, auth, integrity, conf.
CIPHER_RECORDS = bytes([0xC0, 3, 0x01, 0x41, 0x81, 0xC0, 17, 0x03, 0x44, 0x81])
MAX_SESSIONS = 8
IDLE_TIMEOUT = 120.0
SEQ_WINDOW = 16

# A command handler: (netfn, command, request data, lun) -> (completion code, reply data).
Handler = Callable[[int, int, bytes, int], tuple[int, bytes]]


def checksum(data: bytes) -> int:
    """IPMI two's-complement checksum."""
    return -sum(data) & 0xFF


def ipmi_response(request: bytes, code: int, data: bytes) -> bytes:
    """An IPMB-style response message to an IPMB-style request message."""
    rq_addr, rq_seq_lun = request[3], request[4]
    netfn_lun = ((request[1] >> 2) + 1) << 2 | (rq_seq_lun & 0x03)
    head = bytes([rq_addr, netfn_lun])
    body = bytes([request[0], rq_seq_lun & 0xFC | (request[1] & 0x03), request[5], code]) + data
    return head + bytes([checksum(head)]) + body + bytes([checksum(body)])


@dataclass
class Session:
    """One RMCP+ session, from Open Session to Close Session."""

    bmc_id: int
    console_id: int
    auth_alg: int
    integrity_alg: int
    conf_alg: int
    max_role: int
    last_seen: float = field(default_factory=time.monotonic)
    username: bytes = b""
    role_byte: int = 0
    user_max: int = 0
    rm: bytes = b""
    rc: bytes = b""
    password: bytes = b""
    sik: bytes = b""
    k1: bytes = b""
    k2: bytes = b""
    active: bool = False
    privilege: int = 2
    in_seq: int = 0
    out_seq: int = 0
    rakp2: bytes = b""  # replies kept for retransmitted RAKP 1 and 3
    rakp4: bytes = b""

    @property
    def hash(self) -> Any:
        """hashlib constructor of the negotiated RAKP/integrity algorithm."""
        return HASHES[(self.auth_alg, self.integrity_alg)]

    def mac(self, key: bytes, data: bytes) -> bytes:
        """HMAC with the session's hash."""
        return hmac.new(key, data, self.hash).digest()


class RmcpServer(asyncio.DatagramProtocol):
    """Answers RMCP+ on one UDP socket for one BMC."""

    def __init__(self, users: Mapping[str, tuple[str, int]], guid: bytes, handler: Handler) -> None:
        self._users = {name.encode(): (pw.encode(), role) for name, (pw, role) in users.items()}
        self._guid = guid
        self._handler = handler
        self._sessions: dict[int, Session] = {}
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to answer on."""
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        """Answer one datagram; malformed ones are dropped, as a BMC does."""
        try:
            reply = self._dispatch(data)
        except (IndexError, ValueError, KeyError, struct.error) as exc:
            log.debug("dropped a malformed packet from %s: %s", addr, exc)
            return
        if reply and self._transport is not None:
            self._transport.sendto(reply, addr)

    def _dispatch(self, data: bytes) -> bytes | None:
        if len(data) < 5 or data[0] != 0x06:
            return None
        if data[3] & 0x1F == 0x06:
            return self._asf(data)
        if data[3] & 0x1F != 0x07:
            return None
        if data[4] == 0x00:  # IPMI 1.5 framing, no authentication: pre-session only
            length = data[13]
            message = data[14 : 14 + length]
            if struct.unpack_from("<I", data, 9)[0] != 0:
                return None
            rsp = self._presession(message)
            if rsp is None:
                return None
            return RMCP_HEADER + b"\x00" + bytes(8) + bytes([len(rsp)]) + rsp
        if data[4] != 0x06:
            return None  # IPMI 1.5 with MD2/MD5/password: refused
        return self._rmcpplus(data)

    # -- RMCP/ASF ----------------------------------------------------------------------

    @staticmethod
    def _asf(data: bytes) -> bytes | None:
        if data[4:8] != ASF_IANA or data[8] != 0x80:
            return None
        tag = data[9]
        # Presence pong: IANA, no OEM, supports IPMI (0x81), no further interactions.
        body = ASF_IANA + bytes(4) + b"\x81\x00" + bytes(6)
        return b"\x06\x00\xff\x06" + ASF_IANA + bytes([0x40, tag, 0, len(body)]) + body

    # -- pre-session commands ----------------------------------------------------------

    def _presession(self, message: bytes) -> bytes | None:
        netfn, cmd, data = message[1] >> 2, message[5], message[6:-1]
        if netfn != NETFN_APP:
            return None
        if cmd in (CMD_GET_CHANNEL_AUTH_CAPS, CMD_GET_CIPHER_SUITES, CMD_GET_SYSTEM_GUID):
            code, reply = self._app_command(cmd, data)
            return ipmi_response(message, code, reply)
        return None

    def _app_command(self, cmd: int, data: bytes) -> tuple[int, bytes]:
        if cmd == CMD_GET_CHANNEL_AUTH_CAPS:
            # Channel 1; IPMI 2.0 extended data; non-null user names; IPMI 2.0 only.
            return 0, bytes([0x01, 0x80, 0x04, 0x02, 0, 0, 0, 0])
        if cmd == CMD_GET_CIPHER_SUITES:
            if len(data) < 3:
                return 0xC7, b""
            start = (data[2] & 0x3F) * 16
            return 0, b"\x01" + CIPHER_RECORDS[start : start + 16]
        return 0, self._guid  # Get System GUID

    # -- RMCP+ -------------------------------------------------------------------------

    def _rmcpplus(self, data: bytes) -> bytes | None:
        ptype = data[5]
        session_id, seq, length = struct.unpack_from("<IIH", data, 6)
        payload = data[16 : 16 + length]
        bare = ptype & 0x3F
        self._expire()
        if bare == PT_OPEN_REQ:
            return self._wrap(PT_OPEN_RSP, self._open_session(payload))
        if bare == PT_RAKP1:
            return self._wrap(PT_RAKP2, self._rakp1(payload))
        if bare == PT_RAKP3:
            reply = self._rakp3(payload)
            return self._wrap(PT_RAKP4, reply) if reply is not None else None
        if bare != PT_IPMI:
            return None
        if session_id == 0:
            if ptype & 0xC0:
                return None
            rsp = self._presession(payload)
            return self._wrap(PT_IPMI, rsp) if rsp is not None else None
        session = self._sessions.get(session_id)
        if session is None or not session.active or not ptype & 0x40:
            return None
        icv_length = ICV_LENGTH[session.integrity_alg]
        expected = session.mac(session.k1, data[4:-icv_length])[:icv_length]
        if not hmac.compare_digest(expected, data[-icv_length:]):
            return None
        if not self._sequence_ok(session, seq):
            return None
        if ptype & 0x80:
            if session.conf_alg != 1 or len(payload) < 32 or len(payload) % 16:
                return None
            decryptor = Cipher(algorithms.AES(session.k2[:16]), modes.CBC(payload[:16])).decryptor()
            plain = decryptor.update(payload[16:]) + decryptor.finalize()
            payload = plain[: -(plain[-1] + 1)]
        session.last_seen = time.monotonic()
        return self._session_message(session, payload)

    @staticmethod
    def _wrap(ptype: int, payload: bytes) -> bytes:
        """An unauthenticated RMCP+ packet (session setup and pre-session replies)."""
        return (
            RMCP_HEADER
            + bytes([0x06, ptype])
            + bytes(8)
            + struct.pack("<H", len(payload))
            + payload
        )

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [s.bmc_id for s in self._sessions.values() if now - s.last_seen > IDLE_TIMEOUT]:
            del self._sessions[sid]

    def _open_session(self, p: bytes) -> bytes:
        tag, role, console_id = p[0], p[1] & 0x0F, struct.unpack_from("<I", p, 4)[0]
        algs = [p[8 + 8 * i + 4] & 0x3F if p[8 + 8 * i + 3] else -1 for i in range(3)]
        auth, integrity, conf = algs
        if (auth, integrity) not in HASHES or conf not in (0, 1):
            return bytes([tag, ST_NO_CIPHER_MATCH, 0, 0]) + struct.pack("<I", console_id)
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            del self._sessions[oldest.bmc_id]
        bmc_id = 0
        while bmc_id == 0 or bmc_id in self._sessions:
            bmc_id = struct.unpack("<I", os.urandom(4))[0]
        max_role = role or 4
        self._sessions[bmc_id] = Session(bmc_id, console_id, auth, integrity, conf, max_role)
        return (
            bytes([tag, 0, max_role, 0])
            + struct.pack("<II", console_id, bmc_id)
            + bytes([0, 0, 0, 8, auth, 0, 0, 0, 1, 0, 0, 8, integrity, 0, 0, 0])
            + bytes([2, 0, 0, 8, conf, 0, 0, 0])
        )

    def _rakp1(self, p: bytes) -> bytes:
        tag, bmc_id = p[0], struct.unpack_from("<I", p, 4)[0]
        rm, role_byte, name = p[8:24], p[24], p[28 : 28 + p[27]]
        session = self._sessions.get(bmc_id)
        if session is None or session.active:
            return bytes([tag, ST_INVALID_SESSION, 0, 0]) + bytes(4)
        if session.rakp2 and session.rm == rm:
            return session.rakp2  # a retransmitted RAKP 1: same answer
        fail = struct.pack("<I", session.console_id)
        user = self._users.get(bytes(name))
        if user is None:
            return bytes([tag, ST_UNAUTHORIZED_NAME, 0, 0]) + fail
        password, user_max = user
        if (role_byte & 0x0F) > min(user_max, session.max_role):
            return bytes([tag, ST_INVALID_ROLE, 0, 0]) + fail
        session.username, session.role_byte, session.user_max = bytes(name), role_byte, user_max
        session.rm, session.rc, session.password = bytes(rm), os.urandom(16), password
        identity = bytes([role_byte, len(name)]) + name
        code = session.mac(
            password,
            struct.pack("<II", session.console_id, bmc_id)
            + session.rm
            + session.rc
            + self._guid
            + identity,
        )
        # No K_g is set on the simulated BMCs: the session key comes from the password.
        session.sik = session.mac(password, session.rm + session.rc + identity)
        session.k1 = session.mac(session.sik, b"\x01" * 20)
        session.k2 = session.mac(session.sik, b"\x02" * 20)
        session.rakp2 = bytes([tag, 0, 0, 0]) + fail + session.rc + self._guid + code
        return session.rakp2

    def _rakp3(self, p: bytes) -> bytes | None:
        tag, status, bmc_id = p[0], p[1], struct.unpack_from("<I", p, 4)[0]
        session = self._sessions.get(bmc_id)
        if session is None or not session.rakp2:
            return bytes([tag, ST_INVALID_SESSION, 0, 0]) + bytes(4)
        if session.active and session.rakp4:
            return session.rakp4
        console = struct.pack("<I", session.console_id)
        if status != 0:  # the console gave up (e.g. it found the RAKP 2 code wrong)
            del self._sessions[bmc_id]
            return None
        identity = bytes([session.role_byte, len(session.username)]) + session.username
        expected = session.mac(session.password, session.rc + console + identity)
        if not hmac.compare_digest(expected, p[8 : 8 + len(expected)]):
            del self._sessions[bmc_id]
            return bytes([tag, ST_BAD_ICV, 0, 0]) + console
        icv = session.mac(session.sik, session.rm + struct.pack("<I", bmc_id) + self._guid)
        session.active = True
        session.privilege = min(2, session.role_byte & 0x0F or 2)
        session.rakp4 = bytes([tag, 0, 0, 0]) + console + icv[: ICV_LENGTH[session.integrity_alg]]
        return session.rakp4

    @staticmethod
    def _sequence_ok(session: Session, seq: int) -> bool:
        """Accept new numbers and retransmissions inside the window; refuse old ones."""
        if seq == 0 or (session.in_seq and seq + SEQ_WINDOW < session.in_seq):
            return False
        session.in_seq = max(session.in_seq, seq)
        return True

    def _session_message(self, session: Session, message: bytes) -> bytes:
        netfn, lun, cmd, data = message[1] >> 2, message[1] & 0x03, message[5], message[6:-1]
        close = False
        if netfn == NETFN_APP and cmd == CMD_SET_SESSION_PRIV:
            code, reply = self._set_privilege(session, data)
        elif netfn == NETFN_APP and cmd == CMD_CLOSE_SESSION:
            target = struct.unpack_from("<I", data)[0] if len(data) >= 4 else 0
            close = target == session.bmc_id
            code = 0 if close or target in self._sessions else 0x87  # invalid session id
            if target in self._sessions and not close:
                del self._sessions[target]
            reply = b""
        elif netfn == NETFN_APP and cmd in (CMD_GET_CHANNEL_AUTH_CAPS, CMD_GET_CIPHER_SUITES):
            code, reply = self._app_command(cmd, data)
        else:
            code, reply = self._handler(netfn, cmd, bytes(data), lun)
        packet = self._seal(session, ipmi_response(message, code, reply))
        if close:
            del self._sessions[session.bmc_id]
        return packet

    @staticmethod
    def _set_privilege(session: Session, data: bytes) -> tuple[int, bytes]:
        wanted = data[0] & 0x0F if data else 0
        if wanted == 0:
            return 0, bytes([session.privilege])
        if wanted > min(session.user_max, session.max_role, session.role_byte & 0x0F or 4):
            return 0x81, b""  # exceeds the user's or the session's limit
        session.privilege = wanted
        return 0, bytes([wanted])

    @staticmethod
    def _seal(session: Session, payload: bytes) -> bytes:
        """An authenticated (and, when negotiated, AES-encrypted) session packet."""
        session.out_seq = session.out_seq % 0xFFFFFFFF + 1
        ptype = 0x40 | (0x80 if session.conf_alg == 1 else 0)
        if session.conf_alg == 1:
            pad = (-(len(payload) + 1)) % 16
            plain = payload + bytes(range(1, pad + 1)) + bytes([pad])
            iv = os.urandom(16)
            encryptor = Cipher(algorithms.AES(session.k2[:16]), modes.CBC(iv)).encryptor()
            payload = iv + encryptor.update(plain) + encryptor.finalize()
        body = bytes([0x06, ptype]) + struct.pack(
            "<IIH", session.console_id, session.out_seq, len(payload)
        )
        body += payload
        pad = (-(len(body) + 2)) % 4
        body += b"\xff" * pad + bytes([pad, 0x07])
        icv = session.mac(session.k1, body)[: ICV_LENGTH[session.integrity_alg]]
        return RMCP_HEADER + body + icv
