"""SNMP notification receiver: a trap or inform from a target re-polls that target at once.

Polling every 30 s finds a wet leak rope or a UPS on battery up to 30 s late; the devices
themselves say so within a second by sending a notification. The notification is only a
wake-up call: its varbinds are vendor-specific and are not turned into readings. The
target is polled (through its normal driver and profile) as soon as the poll in flight, if
any, has finished, at most once per 2 s (TargetRunner.poll_soon), so /metrics shows the new
state about a second after the event.

pysnmp 7's notification receiver (ntfrcv) does the protocol: SNMPv1 traps, v2c traps and
informs (acknowledged), SNMPv3 traps and informs with the v3 users of the config's auths.
In front of it every datagram passes two token buckets (per source address, and for the
whole receiver) before it is decoded at all, so a flood costs a bounded share of the event
loop and cannot starve polling. Everything not accepted is counted by reason; each reason
is logged once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from pyasn1.codec.ber import decoder  # type: ignore[import-untyped]
from pyasn1.error import PyAsn1Error  # type: ignore[import-untyped]
from pysnmp.carrier.asyncio.dgram import udp, udp6
from pysnmp.carrier.asyncio.dispatch import AsyncioDispatcher
from pysnmp.entity import config as snmp_config
from pysnmp.entity import engine
from pysnmp.entity.rfc3413 import ntfrcv
from pysnmp.proto import rfc1902
from pysnmp.proto.mpmod.rfc3412 import SNMPv3Message
from pysnmp.proto.secmod.rfc3414.service import UsmSecurityParameters

from poller import protocols
from poller.config import Config
from poller.config_values import parse_listen_address
from poller.exporter import exposition
from poller.scheduler import Scheduler
from poller.snmp.auth import SnmpAuth
from poller.store import Store

log = logging.getLogger("hwpoller.notifications")

DEFAULT_PORT = 9162
# Datagrams decoded per second, whole receiver: pysnmp needs ~0.3-1 ms of CPU per
# notification, so this caps a flood at a fraction of one core. A room's worth of devices
# reporting one incident sends a few dozen.
GLOBAL_RATE, GLOBAL_BURST = 200.0, 400.0
# Per source address: a chattering device cannot use up the receiver's budget on its own.
SOURCE_RATE, SOURCE_BURST = 10.0, 20.0
# Source addresses remembered for their bucket; spoofed floods from many addresses are
# bounded by forgetting them all when this many are known.
MAX_SOURCES = 4096
# SNMPv3 traps are authenticated with keys localised to the *sender's* engine ID, learnt
# from the first trap of a known target. Localising costs a 1 MB hash, so per source address
# only this many engine IDs are learnt.
MAX_ENGINE_IDS_PER_SOURCE = 4
# snmpTrapAddress.0: the agent-addr of a v1 trap after pysnmp's RFC 2576 translation (and
# what proxies add to v2c traps): the device a trap is about.
SNMP_TRAP_ADDRESS = (1, 3, 6, 1, 6, 3, 18, 1, 3, 0)
# Seconds per pysnmp timer tick (its default is 0.1). The ticks are only the clock of its
# caches' expiry (v3 engine IDs and timelines after 300 s, state of answered informs), which
# needs no finer grain; see _Dispatcher.
TICK_SECONDS = 1.0

# hwpoller_notifications_total{device,result}: notifications from a configured target.
RESULTS = ("polled", "rate_limited")
# hwpoller_notifications_rejected_total{reason}: datagrams that did not lead to a poll.
REJECTS = (
    "unknown_source",  # well-formed and authenticated, but from no configured target
    "bad_community",  # v1/v2c community not in any auth of the config
    "unknown_user",  # v3 user not in any auth of the config
    "bad_auth",  # v3 digest or decryption failed: wrong password or tampering
    "malformed",  # not a valid SNMP message
    "flood",  # dropped before decoding by the rate limit
    "other",  # valid SNMP that is no notification (a GET sent to this port, ...)
)
# pysnmp's own counters (MIB module, symbol) -> our reason, read around each datagram.
_COUNTERS = (
    ("__SNMPv2-MIB", "snmpInBadCommunityNames", "bad_community"),
    ("__SNMPv2-MIB", "snmpInASNParseErrs", "malformed"),
    ("__SNMP-MPD-MIB", "snmpInvalidMsgs", "malformed"),
    ("__SNMP-MPD-MIB", "snmpUnknownPDUHandlers", "other"),
    ("__SNMP-MPD-MIB", "snmpUnknownSecurityModels", "malformed"),
    ("__SNMP-USER-BASED-SM-MIB", "usmStatsUnknownUserNames", "unknown_user"),
    ("__SNMP-USER-BASED-SM-MIB", "usmStatsWrongDigests", "bad_auth"),
    ("__SNMP-USER-BASED-SM-MIB", "usmStatsDecryptionErrors", "bad_auth"),
    ("__SNMP-USER-BASED-SM-MIB", "usmStatsUnsupportedSecLevels", "bad_auth"),
)

_AUTH = {
    "MD5": snmp_config.USM_AUTH_HMAC96_MD5,
    "SHA": snmp_config.USM_AUTH_HMAC96_SHA,
    "SHA224": snmp_config.USM_AUTH_HMAC128_SHA224,
    "SHA256": snmp_config.USM_AUTH_HMAC192_SHA256,
    "SHA384": snmp_config.USM_AUTH_HMAC256_SHA384,
    "SHA512": snmp_config.USM_AUTH_HMAC384_SHA512,
}
_PRIV = {
    "DES": snmp_config.USM_PRIV_CBC56_DES,
    "AES": snmp_config.USM_PRIV_CFB128_AES,
    "AES192": snmp_config.USM_PRIV_CFB192_AES,
    "AES256": snmp_config.USM_PRIV_CFB256_AES,
}


class _Bucket:
    """A token bucket: `take()` is True while the rate allows."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self._rate, self._burst = rate, burst
        self._tokens, self._stamp = burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def _normal_ip(text: str) -> str | None:
    """An IP address in one spelling (IPv4-mapped IPv6 as IPv4), None if not an address."""
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


@dataclass(frozen=True, slots=True)
class _Known:
    """A configured target as the receiver matches notifications to it."""

    name: str
    port: int
    v3_user: str | None  # the target's SNMPv3 user name, if it polls with v3
    auth: str


class _Credentials:
    """The communities and v3 users of the config, loaded into one pysnmp engine."""

    def __init__(self, snmp_engine: Any) -> None:
        self._engine = snmp_engine
        self._communities: dict[str, str] = {}  # community -> pysnmp community index
        self._users: dict[str, SnmpAuth] = {}  # v3 user name -> auth (local engine ID)
        self._remote: dict[tuple[bytes, str], str] = {}  # (engine ID, user) -> auth name
        self._auths: dict[str, SnmpAuth] = {}

    def load(self, config: Config) -> None:
        """Make the engine accept exactly the config's communities and v3 users."""
        auths = {n: a for n, a in config.auths.items() if isinstance(a, SnmpAuth)}
        self._auths = auths
        communities = {
            a.community.get_secret_value()
            for a in auths.values()
            if a.version != "3" and a.community is not None
        }
        for community in set(self._communities) - communities:
            snmp_config.delete_v1_system(self._engine, self._communities.pop(community))
        for community in sorted(communities - set(self._communities)):
            index = f"hwpoller-c{len(self._communities)}-{time.monotonic_ns()}"
            snmp_config.add_v1_system(self._engine, index, community)
            self._communities[community] = index
        users: dict[str, SnmpAuth] = {}
        for name, auth in sorted(auths.items()):
            if auth.version != "3" or auth.username is None:
                continue
            if auth.username in users and _keys(users[auth.username]) != _keys(auth):
                # Informs reach the receiver's own engine ID, where a user name has one key.
                log.warning(
                    "auth %s: SNMPv3 user %r is defined more than once with different "
                    "settings; informs are accepted with the first one only",
                    name,
                    auth.username,
                )
                continue
            users.setdefault(auth.username, auth)
        for user, auth in self._users.items():
            if users.get(user) is not auth:
                snmp_config.delete_v3_user(self._engine, user)
        for user, auth in users.items():
            if self._users.get(user) is not auth:
                self._add_user(auth, None)
        self._users = users
        for engine_id, user in list(self._remote):
            snmp_config.delete_v3_user(self._engine, user, rfc1902.OctetString(engine_id))
        self._remote.clear()

    def _add_user(self, auth: SnmpAuth, engine_id: bytes | None) -> None:
        level = auth.effective_security_level
        auth_protocol = snmp_config.USM_AUTH_NONE
        priv_protocol = snmp_config.USM_PRIV_NONE
        auth_key = priv_key = None
        if level in ("authNoPriv", "authPriv") and auth.auth_password is not None:
            auth_protocol = _AUTH[auth.auth_protocol or "SHA"]
            auth_key = auth.auth_password.get_secret_value()
        if level == "authPriv" and auth.priv_password is not None:
            priv_protocol = _PRIV[auth.priv_protocol or "AES"]
            priv_key = auth.priv_password.get_secret_value()
        snmp_config.add_v3_user(
            self._engine,
            auth.username,
            auth_protocol,
            auth_key,
            priv_protocol,
            priv_key,
            securityEngineId=None if engine_id is None else rfc1902.OctetString(engine_id),
        )

    def learn_engine(self, engine_id: bytes, user: str, auth_name: str, per_source: int) -> bool:
        """Accept v3 traps of `user` from the engine `engine_id` (a known target's)."""
        if (engine_id, user) in self._remote or per_source >= MAX_ENGINE_IDS_PER_SOURCE:
            return False
        auth = self._auths.get(auth_name)
        if auth is None:
            return False
        self._add_user(auth, engine_id)
        self._remote[(engine_id, user)] = auth_name
        return True


def _keys(auth: SnmpAuth) -> tuple[Any, ...]:
    """What decides whether two v3 auths authenticate alike (secrets compared, not shown)."""
    return (
        auth.effective_security_level,
        auth.auth_protocol,
        auth.auth_password.get_secret_value() if auth.auth_password else None,
        auth.priv_protocol,
        auth.priv_password.get_secret_value() if auth.priv_password else None,
    )


def _v3_header(datagram: bytes) -> tuple[bytes, str] | None:
    """(authoritative engine ID, user name) of an SNMPv3 message, None for anything else."""
    try:
        message, _ = decoder.decode(datagram, asn1Spec=SNMPv3Message())
        if int(message["msgVersion"]) != 3:
            return None
        params, _ = decoder.decode(
            bytes(message["msgSecurityParameters"]), asn1Spec=UsmSecurityParameters()
        )
        return bytes(params[0]), bytes(params[3]).decode("utf-8", "replace")
    except (PyAsn1Error, TypeError, ValueError, IndexError, KeyError):
        return None


def _is_snmp(datagram: bytes) -> bool:
    """Whether a datagram is one BER sequence starting with an SNMP version (0, 1 or 3)."""
    if len(datagram) < 5 or datagram[0] != 0x30:
        return False
    size, start = datagram[1], 2
    if size & 0x80:
        digits = size & 0x7F
        if not 0 < digits <= 4:
            return False
        size, start = int.from_bytes(datagram[2 : 2 + digits], "big"), 2 + digits
    return (
        start + size == len(datagram)
        and datagram[start : start + 2] == b"\x02\x01"
        and datagram[start + 2] in (0, 1, 3)
    )


async def _resolve(hosts: list[str]) -> list[set[str]]:
    """The addresses of each host name (empty when it does not resolve within 5 s), all
    looked up at once so that many named targets cost one timeout, not one each."""
    loop = asyncio.get_running_loop()

    async def one(host: str) -> set[str]:
        try:
            async with asyncio.timeout(5):
                infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        except (OSError, TimeoutError):
            return set()
        return {ip for info in infos if (ip := _normal_ip(str(info[4][0])))}

    return list(await asyncio.gather(*(one(host) for host in hosts)))


class NotificationCounters:
    """The receiver's counters and their collector (read from the HTTP thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_device: dict[tuple[str, str], int] = {}
        self._rejected = dict.fromkeys(REJECTS, 0)
        self.enabled = False

    def known(self, names: list[str]) -> None:
        """Export zeros for every configured target; forget removed ones."""
        with self._lock:
            self._by_device = {
                (n, r): self._by_device.get((n, r), 0) for n in names for r in RESULTS
            }

    def device(self, name: str, result: str) -> None:
        """Count a notification from a configured target."""
        with self._lock:
            key = (name, result)
            self._by_device[key] = self._by_device.get(key, 0) + 1

    def reject(self, reason: str, count: int = 1) -> None:
        """Count datagrams that led to no poll."""
        with self._lock:
            self._rejected[reason] += count

    def describe(self) -> list[Metric]:
        """Nothing to pre-describe."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The two counter families, when the receiver runs."""
        if not self.enabled:
            return
        with self._lock:
            by_device = dict(self._by_device)
            rejected = dict(self._rejected)
        accepted = CounterMetricFamily(
            "hwpoller_notifications",
            "SNMP notifications from configured targets, by result: polled (an extra poll "
            "was started) or rate_limited (one had been started less than 2 s before).",
            labels=("device", "result"),
        )
        for (name, result), count in sorted(by_device.items()):
            accepted.add_metric((name, result), count)
        dropped = CounterMetricFamily(
            "hwpoller_notifications_rejected",
            "Datagrams on the notification port that led to no poll, by reason.",
            labels=("reason",),
        )
        for reason in REJECTS:
            dropped.add_metric((reason,), rejected[reason])
        yield accepted
        yield dropped


class _Dispatcher(AsyncioDispatcher):  # type: ignore[misc]
    """pysnmp's asyncio dispatcher without its timer task.

    AsyncioDispatcher wakes the event loop every timer tick (0.1 s by default) for as long as
    a transport is registered: ~10 wake-ups a second in a process that otherwise sleeps until
    the next poll. A receiver sends no requests of its own, so its ticks only expire cache
    entries that datagrams created; `tick()`, called for every datagram let through, runs
    them instead (at most once per TICK_SECONDS, as the timer task would). While no datagram
    arrives pysnmp's clock stands still and so does its cache; the entries the next datagrams
    add expire as many ticks later as before, so the caches stay as bounded as with the timer
    (at most the datagrams of TICK_SECONDS per tick)."""

    def __init__(self) -> None:
        super().__init__()
        self.set_timer_resolution(TICK_SECONDS)

    def register_transport(self, tDomain: Any, transport: Any) -> None:  # noqa: N803
        """Register as pysnmp does, then cancel the timer task it scheduled (before it ran)."""
        super().register_transport(tDomain, transport)
        self._cancel_loopingcall()

    def tick(self) -> None:
        """What the timer task would have done by now (once per TICK_SECONDS at most)."""
        self.handle_timer_tick(time.time())


class _Transport(udp.UdpTransport):  # type: ignore[misc]
    """pysnmp's UDP transport with the rate limit in front of the decoder."""

    gate: Callable[[tuple[str, int], bytes], bool] = staticmethod(lambda _a, _d: True)
    after: Callable[[tuple[str, int], bytes], None] = staticmethod(lambda _a, _d: None)

    def datagram_received(self, datagram: Any, transportAddress: Any) -> None:  # noqa: N803
        """Decode at once (not call_soon) so each datagram's outcome is known right after."""
        address = (str(transportAddress[0]), int(transportAddress[1]))
        if not self.gate(address, datagram) or self._callback_function is None:
            return
        try:
            self._callback_function(self, transportAddress, datagram)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # noqa: BLE001, S110 - no datagram may end the receiver
            # pysnmp's decoder raises on some garbage (a TypeError deep in pyasn1 for a run
            # of zero bytes) instead of counting it: after() counts it as malformed.
            pass
        self.after(address, datagram)


class _Transport6(udp6.Udp6Transport):  # type: ignore[misc]
    gate: Callable[[tuple[str, int], bytes], bool] = staticmethod(lambda _a, _d: True)
    after: Callable[[tuple[str, int], bytes], None] = staticmethod(lambda _a, _d: None)
    datagram_received = _Transport.datagram_received


class NotificationReceiver:
    """Listens for SNMP notifications and asks the scheduler to re-poll their sender."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self.counters = NotificationCounters()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self.counters)
        self._engine: Any = None
        self._dispatcher: _Dispatcher | None = None
        self._creds: _Credentials | None = None
        self._receiver: Any = None
        self._transport: Any = None
        self._by_ip: dict[str, list[_Known]] = {}
        self._global = _Bucket(GLOBAL_RATE, GLOBAL_BURST)
        self._sources: dict[str, _Bucket] = {}
        self._engines_per_source: dict[str, int] = {}
        self._logged: set[str] = set()
        self._handled = False
        self._source: Any = None
        self._counters: list[tuple[Any, str]] = []
        self._before: list[int] = []
        self.address: tuple[str, int] | None = None  # bound address, None when not running
        self._configured: str | None = None

    def exposition(self, store: Store) -> bytes:
        """/metrics: the exporter's text for the store, then the receiver's counters (text
        expositions concatenate when no family appears in both)."""
        return exposition(store) + generate_latest(self._registry)

    async def start(self, config: Config) -> bool:
        """Bind settings.notification_address and start receiving; False (logged) when the
        receiver is disabled or cannot start. Polling works without it, only slower."""
        try:
            return await self._start(config)
        except Exception:
            log.exception("the SNMP notification receiver failed to start; polling continues")
            self.stop()
            return False

    async def _start(self, config: Config) -> bool:
        address = config.settings.notification_address
        self._configured = address
        if not address:
            return False
        host, port = parse_listen_address(address, DEFAULT_PORT)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host or "0.0.0.0", port))  # noqa: S104 - ":port" means every interface
        except OSError as exc:
            sock.close()
            log.error(
                "cannot receive SNMP notifications on udp %s: %s; polling continues without "
                "them (set settings.notification_address, or null to turn this off)",
                address,
                exc.strerror or exc,
            )
            return False
        sock.setblocking(False)
        # Building the engine loads pysnmp's MIB modules (a few hundred ms): not on the loop.
        snmp_engine = await asyncio.to_thread(engine.SnmpEngine)
        dispatcher = _Dispatcher()
        snmp_engine.register_transport_dispatcher(dispatcher)
        self._dispatcher = dispatcher
        transport_class = _Transport6 if family == socket.AF_INET6 else _Transport
        transport = transport_class()
        transport.gate = self._gate
        transport.after = self._after
        domain = udp6.DOMAIN_NAME if family == socket.AF_INET6 else udp.DOMAIN_NAME
        snmp_config.add_transport(snmp_engine, domain, transport.open_server_mode(sock=sock))
        snmp_engine.observer.register_observer(self._observe, "rfc3412.receiveMessage:request")
        self._engine = snmp_engine
        self._creds = _Credentials(snmp_engine)
        self._counters = [
            (snmp_engine.get_mib_builder().import_symbols(module, symbol)[0], reason)
            for module, symbol, reason in _COUNTERS
        ]
        self._receiver = ntfrcv.NotificationReceiver(snmp_engine, self._on_notification)
        self._transport = transport
        self.address = sock.getsockname()[:2]
        await self.update(config)
        self.counters.enabled = True
        log.info("receiving SNMP notifications on udp %s", address)
        return True

    async def update(self, config: Config) -> None:
        """Take the targets and credentials of a (re)loaded config."""
        if config.settings.notification_address != self._configured:
            log.warning("settings.notification_address changed; it takes effect at restart")
            self._configured = config.settings.notification_address
        if self._engine is None or self._creds is None:
            return
        self._creds.load(config)
        self._engines_per_source.clear()
        by_ip: dict[str, list[_Known]] = {}
        named: dict[str, list[_Known]] = {}  # host names to resolve -> their targets
        for target in config.targets:
            # Each protocol's own parser: a Redfish address may be a URL, whose host is
            # what sends the notification (splitting it as host:port named no host).
            spec = protocols.get(target.protocol)
            try:
                host, port = spec.parse_address(target.address, spec.default_port)
            except (ValueError, KeyError):
                continue
            auth = config.auths.get(target.auth)
            user = auth.username if isinstance(auth, SnmpAuth) and auth.version == "3" else None
            known = _Known(target.name, port, user, target.auth)
            ip = _normal_ip(host)
            (by_ip.setdefault(ip, []) if ip else named.setdefault(host, [])).append(known)
        for host, ips in zip(named, await _resolve(list(named)), strict=True):
            if not ips:
                log.warning(
                    "cannot resolve %s; notifications from %s are not recognised",
                    host,
                    ", ".join(k.name for k in named[host]),
                )
            for ip in ips:
                by_ip.setdefault(ip, []).extend(named[host])
        self._by_ip = by_ip
        self.counters.known([t.name for t in config.targets])

    def stop(self) -> None:
        """Close the port and release the engine."""
        self.counters.enabled = False
        if self._engine is not None:
            try:
                if self._receiver is not None:
                    self._receiver.close(self._engine)
                self._engine.close_dispatcher()
            except Exception:  # shutting down; nothing left to save
                log.debug("error while closing the notification receiver", exc_info=True)
        self._engine = self._receiver = self._transport = self._dispatcher = None

    # --- per datagram -----------------------------------------------------------------------

    def _log_once(self, reason: str, message: str, *args: object) -> None:
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning(
                message + "; further ones are only counted in "
                'hwpoller_notifications_rejected_total{reason="%s"}',
                *args,
                reason,
            )

    def _gate(self, address: tuple[str, int], datagram: bytes) -> bool:
        """Rate limit before decoding; learn v3 engine IDs of known targets."""
        ip = _normal_ip(address[0]) or address[0]
        bucket = self._sources.get(ip)
        if bucket is None:
            if len(self._sources) >= MAX_SOURCES:
                self._sources.clear()
            bucket = self._sources[ip] = _Bucket(SOURCE_RATE, SOURCE_BURST)
        if not (bucket.take() and self._global.take()):
            self.counters.reject("flood")
            self._log_once("flood", "SNMP notifications arrive faster than %g/s", SOURCE_RATE)
            return False
        if self._dispatcher is not None:
            self._dispatcher.tick()  # expire pysnmp's caches before this datagram adds to them
        if datagram[:1] == b"\x30" and self._by_ip.get(ip) and self._creds is not None:
            header = _v3_header(bytes(datagram)) if b"\x02\x01\x03" in datagram[:8] else None
            if header is not None and header[0] and header[1]:
                self._learn(ip, *header)
        self._handled = False
        self._before = [int(counter.syntax) for counter, _ in self._counters]
        return True

    def _learn(self, ip: str, engine_id: bytes, user: str) -> None:
        """The first v3 trap of a known target's engine: localise its user's keys for it."""
        assert self._creds is not None  # noqa: S101 - only called while running
        if not 5 <= len(engine_id) <= 32 or engine_id == self._local_engine_id():
            return
        for known in self._by_ip.get(ip, []):
            if known.v3_user == user:
                count = self._engines_per_source.get(ip, 0)
                if self._creds.learn_engine(engine_id, user, known.auth, count):
                    self._engines_per_source[ip] = count + 1
                return

    def _local_engine_id(self) -> bytes:
        (engine_id,) = self._engine.get_mib_builder().import_symbols(
            "__SNMP-FRAMEWORK-MIB", "snmpEngineID"
        )
        return bytes(engine_id.syntax)

    def _after(self, address: tuple[str, int], datagram: bytes) -> None:
        """Count what became of a datagram that was not a notification."""
        if self._handled:
            return
        after = [int(counter.syntax) for counter, _ in self._counters]
        for (_, reason), old, new in zip(self._counters, self._before, after, strict=True):
            if new > old:
                self.counters.reject(reason)
                self._log_once(reason, "SNMP message from %s rejected: %s", address[0], reason)
                return
        # No counter moved: pysnmp dropped it silently (garbage its decoder gave up on
        # early), or it was a v3 engine-ID discovery or time synchronisation, part of every
        # v3 inform and answered with a report: protocol, not a rejection.
        if not _is_snmp(bytes(datagram)):
            self.counters.reject("malformed")
            self._log_once(
                "malformed", "SNMP message from %s rejected: %s", address[0], "malformed"
            )

    def _observe(self, _engine: Any, _point: str, variables: dict[str, Any], _ctx: Any) -> None:
        self._source = variables.get("transportAddress")

    def _on_notification(
        self,
        _engine: Any,
        _state: Any,
        _context_engine: Any,
        _context_name: Any,
        var_binds: Any,
        _ctx: Any,
    ) -> None:
        """A notification passed authentication: re-poll the target it comes from."""
        self._handled = True
        source = self._source
        if source is None:
            self.counters.reject("other")
            return
        ip = _normal_ip(str(source[0])) or str(source[0])
        port = int(source[1])
        about = None
        for name, value in var_binds:
            if tuple(name) == SNMP_TRAP_ADDRESS:
                about = _normal_ip(value.prettyPrint())
        names = self._match(about, None) if about else []
        if not names:
            names = self._match(ip, port)
        if not names:
            self.counters.reject("unknown_source")
            self._log_once(
                "unknown_source",
                "SNMP notification from %s, which is no configured target",
                about or ip,
            )
            return
        for name in names:
            runner = self._scheduler.runner(name)
            polled = runner is not None and runner.poll_soon()
            self.counters.device(name, "polled" if polled else "rate_limited")

    def _match(self, ip: str, port: int | None) -> list[str]:
        """The targets at an address: the one whose port is the source port (agents that
        send from their own port, like the simulator's), else every target at that IP."""
        known = self._by_ip.get(ip, [])
        exact = [k.name for k in known if port is not None and k.port == port]
        return exact or [k.name for k in known]
