"""Real peer programs started by the tests: net-snmp's snmpd and small hostile UDP agents."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from poller.simulator.snmpsim import free_udp_port
from tests.util import require

V3_USER = "monitor"
# Canary secrets: tests search every output for these and fail if one ever shows up.
V3_AUTH = "authpass-CANARY-7f3a"
V3_PRIV = "privpass-CANARY-91bc"


# The SNMPv2c community snmpd answers (read-only, loopback only).
V2_COMMUNITY = "hwpoller-ro"


class Snmpd:
    """net-snmp snmpd on loopback with one SNMPv3 authPriv SHA-256/AES user (and the v2c
    community V2_COMMUNITY).

    `override` lines make it serve a few RFC 1628 UPS-MIB objects (a UPS on battery), so the
    poller recognises it by upsIdentManufacturer like any standard UPS card.
    """

    def __init__(self) -> None:
        self.port = free_udp_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="hwpoller-snmpd-")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Snmpd:
        """Write the config, start snmpd in the foreground and wait until v3 answers."""
        tmp = Path(self._tmp.name)
        (tmp / "snmpd.conf").write_text(
            f"agentaddress udp:127.0.0.1:{self.port}\n"
            f'createUser {V3_USER} SHA-256 "{V3_AUTH}" AES "{V3_PRIV}"\n'
            f"rouser {V3_USER} priv\n"
            f"rocommunity {V2_COMMUNITY} 127.0.0.1\n"
            'override 1.3.6.1.2.1.33.1.1.1.0 octet_str "NetSNMP Test UPS"\n'
            'override 1.3.6.1.2.1.33.1.1.2.0 octet_str "SNMPD-1000"\n'
            "override 1.3.6.1.2.1.33.1.2.1.0 integer 2\n"
            "override 1.3.6.1.2.1.33.1.2.3.0 integer 12\n"
            "override 1.3.6.1.2.1.33.1.2.4.0 integer 87\n"
            "override 1.3.6.1.2.1.33.1.4.1.0 integer 5\n"
        )
        env = {**os.environ, "SNMP_PERSISTENT_DIR": str(tmp / "persist"), "MIBS": ""}
        argv = [require("snmpd"), "-f", "-Lf", str(tmp / "log"), "-C", "-c"]
        argv += [str(tmp / "snmpd.conf"), "-p", str(tmp / "pid")]
        self._proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        snmpget = require("snmpget")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [
                    snmpget,
                    "-v3",
                    "-l",
                    "authPriv",
                    "-u",
                    V3_USER,
                    "-a",
                    "SHA-256",
                    "-A",
                    V3_AUTH,
                    "-x",
                    "AES",
                    "-X",
                    V3_PRIV,
                    "-t",
                    "0.5",
                    "-r",
                    "0",
                    f"127.0.0.1:{self.port}",
                    "1.3.6.1.2.1.1.2.0",
                ],
                capture_output=True,
                check=False,
                timeout=5,
            )
            if probe.returncode == 0:
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError("snmpd did not answer")

    def stop(self) -> None:
        """Terminate snmpd and delete its files."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(5)
        self._proc = None
        self._tmp.cleanup()

    def __enter__(self) -> Snmpd:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class UdpResponder:
    """A hostile 'agent' on loopback: silent (never answers) or answering garbage bytes."""

    def __init__(self, reply: bytes | None) -> None:
        self._reply = reply
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                _, peer = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.requests += 1
            if self._reply is not None:
                self._sock.sendto(self._reply, peer)

    def __enter__(self) -> UdpResponder:
        self._thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


class LoopingAgent(UdpResponder):
    """An SNMPv2c 'agent' that answers GET normally for sysObjectID (an APC UPS) but answers
    every GETBULK/GETNEXT with the very OID it was asked for: a walk that never advances.
    Real firmware bugs do this; a poller that trusts it walks forever."""

    def __init__(self) -> None:
        super().__init__(b"")

    def _answer(self, request: bytes) -> bytes | None:
        from pyasn1.codec.ber import decoder, encoder
        from pysnmp.proto import api

        proto = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
        message, _ = decoder.decode(request, asn1Spec=proto.Message())
        pdu = proto.apiMessage.get_pdu(message)
        response = proto.apiMessage.get_response(message)
        rsp_pdu = proto.apiMessage.get_pdu(response)
        varbinds = []
        for oid, _value in proto.apiPDU.get_varbinds(pdu):
            if str(oid) == "1.3.6.1.2.1.1.2.0":
                varbinds.append((oid, proto.ObjectIdentifier("1.3.6.1.4.1.318.1.3.27")))
            else:
                # GET gets a 1; GETNEXT/GETBULK get the same OID back: no progress.
                varbinds.append((oid, proto.Integer(1)))
        proto.apiPDU.set_varbinds(rsp_pdu, varbinds)
        return bytes(encoder.encode(response))

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.requests += 1
            answer = self._answer(data)
            if answer:
                self._sock.sendto(answer, peer)
