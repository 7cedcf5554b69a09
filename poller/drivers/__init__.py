"""Protocol drivers behind one Driver protocol, and the registry that picks one per target."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from poller.compose import checked
from poller.config import Config, IpmiAuth, IpmiOptions, SnmpAuth, Target
from poller.config_values import split_address
from poller.model import DeviceData
from poller.profiles import ProfileSet

DEFAULT_PORTS = {"snmp": 161, "ipmi": 623}

# One line per protocol: "module:factory". Imported lazily so a protocol's library is only
# loaded when a target uses it.
REGISTRY = {
    "snmp": "poller.drivers.snmp:SnmpDriver",
    "ipmi": "poller.drivers.ipmi:IpmiDriver",
}


@dataclass(frozen=True, slots=True)
class PollSpec:
    """Everything a driver needs to know about its target, with defaults resolved."""

    name: str
    protocol: str
    host: str
    port: int
    auth: SnmpAuth | IpmiAuth
    profile: str | None
    interval: float
    timeout: float  # the outer deadline of one poll
    retries: int
    max_repetitions: int
    ipmi: IpmiOptions
    # Whether max_repetitions was set for the target or in settings (a limit to keep to,
    # for fragile cards) rather than the default starting size.
    max_repetitions_fixed: bool = False

    @classmethod
    def from_config(cls, config: Config, target: Target) -> PollSpec:
        """Resolve a target's settings against the config defaults."""
        host, port = split_address(target.address, DEFAULT_PORTS[target.protocol])
        return cls(
            name=target.name,
            protocol=target.protocol,
            host=host,
            port=port,
            auth=config.auth_for(target),
            profile=target.profile,
            interval=config.interval_for(target),
            timeout=config.timeout_for(target),
            retries=config.retries_for(target),
            max_repetitions=config.max_repetitions_for(target),
            ipmi=target.ipmi,
            max_repetitions_fixed=target.max_repetitions is not None
            or "max_repetitions" in config.settings.model_fields_set,
        )


class DriverContext:
    """Process-wide resources shared by drivers: profiles and concurrency caps."""

    def __init__(self, profiles: ProfileSet, snmp_concurrency: int, ipmi_threads: int) -> None:
        self.profiles = profiles
        self.snmp_semaphore = asyncio.Semaphore(snmp_concurrency)
        self.ipmi_threads = ipmi_threads
        self._executor: ThreadPoolExecutor | None = None

    @property
    def ipmi_executor(self) -> ThreadPoolExecutor:
        """Bounded thread pool for blocking IPMI calls, created on first use."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.ipmi_threads, thread_name_prefix="ipmi")
        return self._executor

    def shutdown(self) -> None:
        """Release the thread pool without waiting for hung device calls."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


class Driver(Protocol):
    """Polls one target; raises DeviceError subclasses on failure."""

    async def poll(self) -> DeviceData:
        """Read the device once and return normalised data."""
        ...

    async def close(self) -> None:
        """Release sessions and sockets; called on shutdown and when a target is removed."""
        ...


DriverFactory = Callable[[PollSpec, DriverContext], Driver]


def driver_for(spec: PollSpec, context: DriverContext) -> Driver:
    """Create the driver for a target's protocol."""
    module_name, _, attr = REGISTRY[spec.protocol].partition(":")
    factory: DriverFactory = getattr(importlib.import_module(module_name), attr)
    driver = factory(spec, context)
    # The SNMP driver merges its profiles' readings itself (poller.compose); every other
    # protocol's readings pass the same checks here: physically possible values, one
    # series per identity.
    return driver if spec.protocol == "snmp" else Checked(driver)


class Checked:
    """A driver whose readings are checked by poller.compose before they are stored."""

    def __init__(self, inner: Driver) -> None:
        self.inner = inner

    async def poll(self) -> DeviceData:
        """Poll the wrapped driver and drop impossible or duplicate readings (counted)."""
        return checked(await self.inner.poll())

    async def close(self) -> None:
        """Close the wrapped driver."""
        await self.inner.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)
