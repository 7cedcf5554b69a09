"""SNMPv2c traps from the simulated SNMP devices when their state changes.

Real management cards send a notification the moment a leak rope trips, the UPS transfers
to battery or the CRAC raises an alarm; hwpoller's notification receiver re-polls the sender
at once. Each trap leaves from the device's own agent socket, so its source address is the
address hwpoller polls, as with most embedded SNMP agents.

The trap OIDs are the devices' own where our MIB notes have them (PowerNet-MIB upsOnBattery
and powerRestored as RFC 2576 v2 OIDs; NETBOTZV2-MIB netBotzDryContactValueError and its
RTN, the port type a leak rope plugs into). For the Liebert unit they sit under
lgpNotifications (LIEBERT-GP-REG-MIB), whose members are defined in a MIB we do not have;
hwpoller does not interpret them either: any notification from a target re-polls it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pyasn1.codec.ber import encoder  # type: ignore[import-untyped]
from pysnmp.proto.api import v2c

from poller.simulator.model import RoomModel

log = logging.getLogger("hwpoller.simulator")

SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
SNMP_TRAP_OID = "1.3.6.1.6.3.1.1.4.1.0"
# (trap OID when the condition starts, trap OID when it ends)
UPS_ON_BATTERY = ("1.3.6.1.4.1.318.0.5", "1.3.6.1.4.1.318.0.9")
NETBOTZ_LEAK = ("1.3.6.1.4.1.5528.100.10.2.7.0.10", "1.3.6.1.4.1.5528.100.10.2.7.0.110")
LIEBERT_CONDITION = ("1.3.6.1.4.1.476.1.42.3.3.0.1", "1.3.6.1.4.1.476.1.42.3.3.0.2")
# NETBOTZV2-MIB netBotzV2TrapSensorLabel, APC mtrapargsString: a human-readable text.
TEXT_OID = {
    "ups": "1.3.6.1.4.1.318.2.3.1.0",
    "envmon": "1.3.6.1.4.1.5528.100.11.5.0",
    "crac": "1.3.6.1.4.1.476.1.42.3.2.3.1.2.0",
}


def _ups(room: RoomModel) -> tuple[bool, ...]:
    return (not room.ups.mains,)


def _envmon(room: RoomModel) -> tuple[bool, ...]:
    return (room.leak_rope_wet,)


def _crac(room: RoomModel) -> tuple[bool, ...]:
    crac = room.crac
    return (not crac.compressor_ok, crac.floor_wet, not crac.running(room.ups.mains))


# kind -> (state of the device's alarm conditions, trap OIDs, texts per condition)
WATCHED: dict[str, tuple[Callable[[RoomModel], tuple[bool, ...]], tuple[str, str], list[str]]] = {
    "ups": (_ups, UPS_ON_BATTERY, ["UPS: On battery power in response to an input power problem"]),
    "envmon": (_envmon, NETBOTZ_LEAK, ["Leak Rope (Rack A Under Floor): Leak"]),
    "crac": (
        _crac,
        LIEBERT_CONDITION,
        ["Compressor 1 High Head Pressure", "Water Under Floor", "Unit Off"],
    ),
}


def trap_datagram(community: str, uptime: float, trap_oid: str, text_oid: str, text: str) -> bytes:
    """An encoded SNMPv2c trap message."""
    pdu = v2c.SNMPv2TrapPDU()
    v2c.apiTrapPDU.set_defaults(pdu)
    v2c.apiTrapPDU.set_varbinds(
        pdu,
        [
            (v2c.ObjectIdentifier(SYS_UPTIME), v2c.TimeTicks(round(uptime * 100) % (1 << 32))),
            (v2c.ObjectIdentifier(SNMP_TRAP_OID), v2c.ObjectIdentifier(trap_oid)),
            (v2c.ObjectIdentifier(text_oid), v2c.OctetString(text)),
        ],
    )
    message = v2c.Message()
    v2c.apiMessage.set_defaults(message)
    v2c.apiMessage.set_community(message, community)
    v2c.apiMessage.set_pdu(message, pdu)
    return bytes(encoder.encode(message))


class Notifier:
    """Sends a trap from a device's socket whenever one of its watched conditions changes."""

    def __init__(
        self, room: RoomModel, community: str, destination: tuple[str, int] | None
    ) -> None:
        self._room = room
        self._community = community
        self.destination = destination
        self._devices: list[tuple[str, str, Any]] = []  # (name, kind, socket)
        self._last: dict[str, tuple[bool, ...]] = {}
        self.sent = 0

    def watch(self, name: str, kind: str, sock: Any) -> None:
        """Send this device's traps from `sock` (its agent's UDP socket)."""
        if kind in WATCHED:
            self._devices.append((name, kind, sock))
            self._last[name] = WATCHED[kind][0](self._room)

    def check(self, uptime: float) -> None:
        """Compare every watched device with its last state; send a trap per change."""
        for name, kind, sock in self._devices:
            state_of, (raised, cleared), texts = WATCHED[kind]
            now, before = state_of(self._room), self._last[name]
            self._last[name] = now
            for i, (on, was) in enumerate(zip(now, before, strict=True)):
                if on == was or self.destination is None:
                    continue
                text = texts[i] if on else f"{texts[i]} cleared"
                data = trap_datagram(
                    self._community, uptime, raised if on else cleared, TEXT_OID[kind], text
                )
                try:
                    sock.sendto(data, self.destination)
                    self.sent += 1
                except OSError as exc:
                    log.warning("%s: cannot send a trap to %s: %s", name, self.destination, exc)
                else:
                    log.info("%s sent a trap: %s", name, text)
