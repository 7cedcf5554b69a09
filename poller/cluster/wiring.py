"""How `hwpoller run` uses a coordinator: the scheduler polls the owned subset of the
running config, and every ownership change is applied to it like a reload (the scheduler
stops the runners of targets that left, closing their sessions, and starts the new ones)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from poller.cluster.coordinator import Coordinator, target_sites
from poller.config import Config
from poller.driver import Driver, DriverContext, PollSpec, driver_for
from poller.scheduler import Scheduler
from poller.store import Store

log = logging.getLogger("hwpoller.cluster")


def owned_config(config: Config, owned: frozenset[str]) -> Config:
    """The config narrowed to the targets this member polls."""
    return config.model_copy(update={"targets": [t for t in config.targets if t.name in owned]})


class ClusterMember:
    """The cluster side of one `hwpoller run`."""

    def __init__(self, config: Config, lock: asyncio.Lock) -> None:
        assert config.cluster is not None  # noqa: S101 - only built in cluster mode
        self._first = config
        self._config = config  # the running full config
        self._lock = lock  # the reload lock: ownership changes never interleave with one
        self._scheduler: Scheduler | None = None
        self.coordinator = Coordinator(config.cluster, target_sites(config.targets), self._apply)

    async def join(self) -> None:
        """Join (or, etcd unreachable, start fail static) and say so."""
        c = self.coordinator
        await c.start()
        log.info(
            "cluster: member %s of %s, %d members seen; polling %d of %d targets%s",
            c.member,
            c.settings.prefix,
            len(c.members),
            len(c.owned),
            len(self._config.targets),
            " (fail static: etcd unreachable)" if c.fail_static else "",
        )

    def scheduled(self) -> Config:
        """The config the scheduler starts with."""
        return owned_config(self._config, self.coordinator.owned)

    def make_driver(self, spec: PollSpec, context: DriverContext) -> Driver:
        """Drivers whose polls wait while the lease is in doubt."""
        return self.coordinator.fence(driver_for)(spec, context)

    def attach(self, scheduler: Scheduler) -> None:
        """Start following the members and applying ownership to this scheduler."""
        self._scheduler = scheduler
        self.coordinator.launch()

    def render(self, base: Callable[[Store], bytes]) -> Callable[[Store], bytes]:
        """/metrics: what `base` renders, then the cluster's metrics."""
        coordinator = self.coordinator
        # A scrape waits (briefly) like a poll while the lease is in doubt.
        timeout = coordinator.settings.timeout() + 0.5

        def render(store: Store) -> bytes:
            coordinator.wait_turn_blocking(timeout)
            return base(store) + coordinator.exposition()

        return render

    def narrow(self, new_config: Config) -> Config:
        """A reloaded config, narrowed to the targets this member owns in it."""
        if new_config.cluster != self._first.cluster:
            log.warning("the cluster section changed; it takes effect at restart")
        self._config = new_config
        owned = self.coordinator.update_targets(target_sites(new_config.targets))
        return owned_config(new_config, owned)

    async def _apply(self, owned: frozenset[str]) -> None:
        if self._scheduler is None:
            return
        async with self._lock:
            await self._scheduler.apply(owned_config(self._config, owned))

    async def stop(self) -> None:
        """Leave the cluster (the lease goes back, so the others take over at once)."""
        await self.coordinator.stop()
