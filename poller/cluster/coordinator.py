"""Membership in etcd and the targets this member owns.

Each member holds one lease and one key, PREFIX/members/NAME, attached to it; it refreshes
the lease every lease_ttl/3 and re-reads the member keys then and whenever etcd's watch says
they changed. Ownership is computed locally (poller.cluster.ownership), so etcd carries
O(members) keys and a few requests per member every lease_ttl, however many targets there
are, and no poll ever writes to etcd.

Fencing: the lease is known alive only until `sent + ttl` of the last refresh that etcd
answered (a monotonic time, so a process stopped with SIGSTOP sees it pass). After that a
poll waits until the coordinator has asked etcd again: re-registered and re-read the members
(dropping the targets others took meanwhile), or found etcd unreachable (fail static).

Fail static: when etcd does not answer, the member keeps polling what it owned last; one that
never reached etcd polls every target. Both are logged once and visible in the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from poller.cluster.etcd import EtcdClient, EtcdError, LeaseLostError, ssl_context
from poller.cluster.ownership import Member, owned_by
from poller.cluster.settings import ClusterSettings
from poller.driver import Driver, DriverContext, PollSpec
from poller.errors import ConfigError
from poller.model import DeviceData

log = logging.getLogger("hwpoller.cluster")

OwnedCallback = Callable[[frozenset[str]], Awaitable[None]]
# Retry cadence while etcd does not answer: quick enough to rejoin within a second or two
# of etcd coming back, slow enough not to hammer an etcd that is struggling.
RETRY_SECONDS = 1.0
# How long a shutdown waits to give its lease back (others then take over at once).
REVOKE_TIMEOUT = 1.0


class DuplicateMemberError(ConfigError):
    """Another live process holds this member name."""


class Coordinator:
    """One member of a cluster: its lease, its view of the live members, its targets."""

    def __init__(
        self,
        settings: ClusterSettings,
        targets: Mapping[str, str | None],
        on_owned: OwnedCallback | None = None,
    ) -> None:
        self.settings = settings
        self.member = settings.member
        self._targets = dict(targets)
        self._on_owned = on_owned
        context = None
        if any(e.startswith("https://") for e in settings.etcd):
            context = ssl_context(settings.ca_file, settings.cert_file, settings.key_file)
        password = settings.password.get_secret_value() if settings.password else None
        self.client = EtcdClient(
            settings.etcd, settings.timeout(), context, settings.username, password
        )
        self._ttl = int(settings.lease_ttl)
        self._members_prefix = f"{settings.prefix}/members/"
        self.key = self._members_prefix + self.member
        # Who holds the key: shown when a second process is started with the same name.
        self._holder = {
            "member": self.member,
            "site": settings.site,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": round(time.time(), 3),
            "incarnation": secrets.token_hex(8),
        }
        self._lease: int | None = None
        self._valid_until = 0.0  # monotonic: the lease surely lives until then
        self._registered_once = False
        # True from finding the lease gone until the members were re-read and applied: a
        # new lease alone does not say which targets the others took meanwhile.
        self._view_stale = False
        self.members: frozenset[Member] = frozenset()
        self.owned: frozenset[str] = frozenset(self._targets)  # fail static: everything
        self.reachable = False
        self.fail_static = True
        self.moves_in = 0
        self.moves_out = 0
        self.lease_losses = 0
        self._revision = 0
        self._settled = asyncio.Event()
        self._settled.set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._unreachable_logged = False
        self._duplicate_logged = False
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    # --- life cycle -------------------------------------------------------------------

    async def start(self) -> frozenset[str]:
        """Join the cluster and return the targets to poll. A member name held by another
        live process is refused (DuplicateMemberError) once the previous holder's lease had
        time to run out; an unreachable etcd means all targets, until it answers."""
        deadline = time.monotonic() + self._ttl + 1
        try:
            while True:
                holder = await self._register()
                if holder is None:
                    break
                if time.monotonic() >= deadline:
                    raise DuplicateMemberError([self._duplicate_message(holder)])
                # Perhaps this member's own previous life (killed, restarted at once):
                # its lease runs out within one ttl.
                await asyncio.sleep(0.5)
            await self._resync(apply=False)
        except EtcdError as exc:
            self._enter_unreachable(exc)
        # The first split is where this member starts, not a move.
        self.moves_in = self.moves_out = 0
        return self.owned

    def launch(self) -> None:
        """Start keeping the lease and following the members in the background."""
        self._tasks = [
            asyncio.create_task(self._run(), name="cluster:lease"),
            asyncio.create_task(self._watch(), name="cluster:watch"),
        ]

    async def stop(self) -> None:
        """Leave: give the lease back so that the others take over at once."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._lease is not None:
            with contextlib.suppress(EtcdError, TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(REVOKE_TIMEOUT):
                    await self.client.revoke(self._lease)
            self._lease = None
        await self.client.close()

    def update_targets(self, targets: Mapping[str, str | None]) -> frozenset[str]:
        """A reload changed the target list: the targets to poll now (no etcd request:
        every member has the same list and computes the same split)."""
        self._targets = dict(targets)
        if self._registered_once and self.members:
            new = owned_by(self.member, self._targets, self.members)
        elif self._registered_once:
            new = self.owned & frozenset(self._targets)
        else:
            new = frozenset(self._targets)
        self.owned = new
        return new

    # --- fencing ----------------------------------------------------------------------

    def must_wait(self) -> bool:
        """True while polls must wait: the lease may have expired (this process did not run
        for a while) and etcd has not been asked since."""
        return (
            self._registered_once
            and not self.fail_static
            and (self._view_stale or time.monotonic() > self._valid_until)
        )

    async def wait_turn(self) -> None:
        """Return when this member may poll: at once, unless must_wait()."""
        while self.must_wait():
            self._settled.clear()
            self._wake.set()
            await self._settled.wait()

    def wait_turn_blocking(self, timeout: float) -> None:
        """The same for a thread (the HTTP server's, before a scrape): wait while
        must_wait(), at most `timeout` seconds, so that a member resumed after its lease ran
        out never serves the targets the others took meanwhile."""
        deadline = time.monotonic() + timeout
        while self.must_wait() and time.monotonic() < deadline:
            time.sleep(0.02)

    def fence(
        self, make: Callable[[PollSpec, DriverContext], Driver]
    ) -> Callable[[PollSpec, DriverContext], Driver]:
        """Wrap a driver factory so that every poll first waits for wait_turn()."""

        def fenced(spec: PollSpec, context: DriverContext) -> Driver:
            return FencedDriver(make(spec, context), self)

        return fenced

    # --- etcd -------------------------------------------------------------------------

    async def _register(self) -> dict[str, Any] | None:
        """Take a new lease and create the member key; None on success, else what the
        holder of the name wrote in it."""
        lease, ttl = await self.client.grant(self._ttl)
        sent = time.monotonic()
        value = json.dumps(self._holder).encode()
        existing = await self.client.put_if_absent(self.key, value, lease)
        if existing is not None:
            with contextlib.suppress(EtcdError):
                await self.client.revoke(lease)
            try:
                holder: Any = json.loads(existing.value)
            except ValueError:
                holder = {}
            return holder if isinstance(holder, dict) else {}
        self._lease = lease
        self._valid_until = sent + ttl
        self._registered_once = True
        self._duplicate_logged = False
        log.info(
            "cluster: member %s joined %s (lease %x, ttl %ds)",
            self.member,
            self.settings.prefix,
            lease,
            ttl,
        )
        return None

    async def _rejoin(self) -> None:
        """Register again after the lease was lost (or never held); EtcdError while the
        name is held by another process."""
        holder = await self._register()
        if holder is not None:
            if not self._duplicate_logged:
                self._duplicate_logged = True
                log.error("%s; retrying", self._duplicate_message(holder))
            raise EtcdError("member name taken")

    def _duplicate_message(self, holder: Mapping[str, Any]) -> str:
        where = ", ".join(f"{k} {holder[k]}" for k in ("host", "pid") if k in holder)
        return (
            f"cluster.member: {self.member!r} is already a live member of "
            f"{self.settings.prefix} ({where or 'another process'}); every member needs its "
            "own name (cluster.member, default the host name)"
        )

    async def _keepalive(self) -> None:
        assert self._lease is not None  # noqa: S101 - only called while registered
        sent = time.monotonic()
        ttl = await self.client.keepalive(self._lease)
        self._valid_until = sent + ttl

    async def _resync(self, apply: bool = True) -> None:
        """Re-read the member keys and apply the ownership they give."""
        kvs, revision = await self.client.range_prefix(self._members_prefix)
        self._revision = max(self._revision, revision)
        members = set()
        for kv in kvs:
            name = kv.key[len(self._members_prefix) :]
            try:
                site = json.loads(kv.value).get("site")
            except (ValueError, AttributeError):
                site = None
            members.add(Member(name, site if isinstance(site, str) else None))
        if self._lease is not None:
            members.add(Member(self.member, self.settings.site))
        changed_members = frozenset(members) != self.members
        self.members = frozenset(members)
        new = owned_by(self.member, self._targets, self.members)
        was_static = self.fail_static
        self._healthy()
        if new != self.owned or changed_members or was_static:
            gained, lost = new - self.owned, self.owned - new
            self.moves_in += len(gained)
            self.moves_out += len(lost)
            self.owned = new
            log.info(
                "cluster: %d members (%s); polling %d of %d targets (+%d, -%d)",
                len(self.members),
                ", ".join(sorted(m.name for m in self.members)),
                len(new),
                len(self._targets),
                len(gained),
                len(lost),
            )
            if apply and (gained or lost) and self._on_owned is not None:
                try:
                    await self._on_owned(new)
                except Exception:  # a bug in applying must not end the membership
                    log.exception("cluster: applying the new ownership failed")
        self._view_stale = False
        self._settled.set()

    def _healthy(self) -> None:
        if not self.reachable and self._unreachable_logged:
            log.warning("cluster: etcd answers again (%s)", self.client.endpoint)
        self.reachable = True
        self.fail_static = False
        self._unreachable_logged = False

    def _enter_unreachable(self, exc: Exception) -> None:
        self.reachable = False
        if not self._unreachable_logged:
            self._unreachable_logged = True
            if self._registered_once:
                log.warning(
                    "cluster: etcd unreachable (%s); keeping the %d targets owned last",
                    exc,
                    len(self.owned),
                )
            else:
                log.warning(
                    "cluster: cannot reach etcd (%s); polling all %d targets until it answers",
                    exc,
                    len(self.owned),
                )
        if self._lease is None or time.monotonic() >= self._valid_until:
            # Nobody can say who owns what: keep polling rather than let devices go unwatched.
            self.fail_static = True
            self._settled.set()

    async def _run(self) -> None:
        """Keep the lease and the member view fresh, forever; nothing etcd does ends it."""
        period = self._ttl / 3
        next_refresh = 0.0
        while True:
            try:
                now = time.monotonic()
                if self._lease is None:
                    await self._rejoin()
                    await self._resync()
                    next_refresh = time.monotonic() + period
                elif now >= next_refresh or self.must_wait():
                    await self._keepalive()
                    await self._resync()
                    next_refresh = time.monotonic() + period
                else:
                    await self._resync()
                self._settled.set()
            except asyncio.CancelledError:
                raise
            except LeaseLostError as exc:
                self.lease_losses += 1
                self._lease = None
                self._view_stale = True
                log.warning("cluster: %s; joining again", exc)
                continue
            except EtcdError as exc:
                self._enter_unreachable(exc)
                next_refresh = 0.0
            except Exception as exc:  # a bug here must not end the membership loop
                log.exception("cluster: unexpected error")
                self._enter_unreachable(exc)
                next_refresh = 0.0
            wait = max(0.0, next_refresh - time.monotonic()) if self.reachable else RETRY_SECONDS
            if self._lease is not None and not self.fail_static:
                # Wake when the lease would run out, to decide between fenced and static.
                wait = min(wait, max(0.0, self._valid_until - time.monotonic()) + 0.01)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _watch(self) -> None:
        """Wake the lease loop whenever a member key changes (a join, a leave, a lease
        that ran out), so that ownership follows in milliseconds, not at the next refresh."""
        while True:
            try:
                async for revision in self.client.watch_prefix(
                    self._members_prefix, self._revision + 1
                ):
                    self._revision = max(self._revision, revision)
                    self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the refresh loop still follows the members
                log.debug("cluster: watch: %s", exc)
            await asyncio.sleep(RETRY_SECONDS)

    # --- metrics ----------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The cluster's own metrics in the text format."""
        return generate_latest(self.registry)


class FencedDriver:
    """A driver whose polls wait while the member's lease is in doubt."""

    def __init__(self, inner: Driver, coordinator: Coordinator) -> None:
        self._inner = inner
        self._coordinator = coordinator

    async def poll(self) -> DeviceData:
        """Poll through the inner driver once this member may."""
        await self._coordinator.wait_turn()
        return await self._inner.poll()

    async def close(self) -> None:
        """Close the inner driver's session."""
        await self._inner.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


class _Collector:
    """hwpoller_cluster_* from the coordinator's state (cheap: no etcd request)."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._c = coordinator

    def collect(self) -> Iterator[Metric]:
        c = self._c
        info = GaugeMetricFamily(
            "hwpoller_cluster_member_info",
            "This member of the cluster: name and site; value 1.",
            labels=["member", "cluster_site"],
        )
        info.add_metric([c.member, c.settings.site or ""], 1)
        yield info
        yield GaugeMetricFamily(
            "hwpoller_cluster_members",
            "Live members this member sees in etcd (itself included).",
            value=len(c.members),
        )
        if c.settings.expected_members is not None:
            yield GaugeMetricFamily(
                "hwpoller_cluster_expected_members",
                "Members the cluster should have (cluster.expected_members).",
                value=c.settings.expected_members,
            )
        yield GaugeMetricFamily(
            "hwpoller_cluster_targets",
            "Targets in the configuration (every member has the same list).",
            value=len(c._targets),
        )
        yield GaugeMetricFamily(
            "hwpoller_cluster_owned_targets",
            "Targets this member polls.",
            value=len(c.owned),
        )
        yield GaugeMetricFamily(
            "hwpoller_cluster_coordinator_up",
            "1 when etcd answered the last request, 0 when it is unreachable.",
            value=1 if c.reachable else 0,
        )
        yield GaugeMetricFamily(
            "hwpoller_cluster_fail_static",
            "1 while polling without etcd: what was owned last, or everything if never joined.",
            value=1 if c.fail_static else 0,
        )
        moves = CounterMetricFamily(
            "hwpoller_cluster_target_moves",
            "Targets this member took over (in) or handed over (out).",
            labels=["direction"],
        )
        moves.add_metric(["in"], c.moves_in)
        moves.add_metric(["out"], c.moves_out)
        yield moves
        yield CounterMetricFamily(
            "hwpoller_cluster_lease_losses",
            "Times this member found its etcd lease gone (it was stopped, or cut off).",
            value=c.lease_losses,
        )
        requests = CounterMetricFamily(
            "hwpoller_cluster_etcd_requests",
            "Requests sent to etcd, by kind.",
            labels=["request"],
        )
        for name, count in sorted(c.client.requests.items()):
            requests.add_metric([name], count)
        yield requests
        yield CounterMetricFamily(
            "hwpoller_cluster_etcd_errors",
            "etcd requests that failed on every endpoint.",
            value=c.client.errors,
        )


def target_sites(targets: Any) -> dict[str, str | None]:
    """{target name: its `site` label or None} for a config's targets."""
    return {t.name: t.labels.get("site") for t in targets}
