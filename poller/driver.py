"""The Driver protocol every protocol package implements, what a driver is given (PollSpec,
DriverContext), and driver_for(), which picks a target's driver through the registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from pydantic import BaseModel

from poller import protocols
from poller.compose import checked
from poller.config import Settings
from poller.model import DeviceData
from poller.profiles import ProfileSet

if TYPE_CHECKING:
    from poller.config import Config, SettingsBase, TargetBase

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class PollSpec:
    """Everything a driver needs to know about its target, with defaults resolved.

    `auth` is the protocol's credentials model and `options` its target options (see
    ProtocolSpec.options); a driver checks their type once, in its constructor.
    """

    name: str
    protocol: str
    address: str  # as written in the config
    host: str
    port: int
    auth: BaseModel
    profile: str | None
    interval: float
    timeout: float  # the outer deadline of one poll
    retries: int
    options: BaseModel

    @classmethod
    def from_config(cls, config: Config, target: TargetBase) -> PollSpec:
        """Resolve a target's settings against the config defaults."""
        record = protocols.get(target.protocol)
        host, port = record.parse_address(target.address, record.default_port)
        return cls(
            name=target.name,
            protocol=target.protocol,
            address=target.address,
            host=host,
            port=port,
            auth=config.auth_for(target),
            profile=target.profile,
            interval=config.interval_for(target),
            timeout=config.timeout_for(target),
            retries=config.retries_for(target),
            options=record.options(target, config.settings),
        )


class DriverContext:
    """Process-wide things drivers share: the profiles, and each protocol's resource (a
    concurrency cap, a thread pool), created when its first driver asks for it."""

    def __init__(self, profiles: ProfileSet, settings: SettingsBase | None = None) -> None:
        self.profiles = profiles
        self.settings: SettingsBase = settings if settings is not None else Settings()
        self._resources: dict[str, protocols.Resource] = {}

    def resource(self, protocol: str, kind: type[R]) -> R:
        """The shared resource of a protocol, checked to be of the type its driver expects."""
        found = self._resources.get(protocol)
        if found is None:
            make = protocols.get(protocol).resource
            if make is None:
                raise KeyError(f"protocol {protocol} has no shared resource")
            found = self._resources[protocol] = make(self.settings)
        if not isinstance(found, kind):  # pragma: no cover - a wiring bug
            raise TypeError(f"{protocol} resource is {type(found).__name__}, not {kind.__name__}")
        return found

    def drop_resource(self, protocol: str) -> None:
        """Close one protocol's resource (its settings changed); the next driver makes anew."""
        found = self._resources.pop(protocol, None)
        if found is not None:
            found.close()

    def shutdown(self) -> None:
        """Release every resource without waiting for hung device calls."""
        for protocol in list(self._resources):
            self.drop_resource(protocol)


class Driver(Protocol):
    """Polls one target; raises DeviceError subclasses on failure."""

    async def poll(self) -> DeviceData:
        """Read the device once and return normalised data."""
        ...

    async def close(self) -> None:
        """Release sessions and sockets; called on shutdown and when a target is removed."""
        ...


def driver_for(spec: PollSpec, context: DriverContext) -> Driver:
    """Create the driver for a target's protocol."""
    record = protocols.get(spec.protocol)
    driver = record.driver_factory()(spec, context)
    # Readings pass the same checks whatever the protocol: physically possible values, one
    # series per identity (the SNMP driver does this itself while merging profiles).
    return Checked(driver) if record.check_readings else driver


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
