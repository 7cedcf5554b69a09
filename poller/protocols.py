"""The protocol registry: one record per protocol, everything the rest of hwpoller knows of it.

A protocol is one package (poller/snmp/, poller/ipmi/, ...) whose `__init__` defines
`PROTOCOL`, a ProtocolSpec. Config builds its auth union, the `protocol:` choices, each
protocol's target and settings keys from these records; the profile loader parses each
profile file with its protocol's model; the scheduler creates drivers and shared resources
through them. Adding a protocol is adding its package and one name to PACKAGES.

A package's `__init__` must stay light (pydantic models and plain functions): it is imported
whenever a config is read. The protocol library itself (gufo-snmp, pyghmi, an HTTP client)
is imported by the driver module, named by `driver`, only when a target uses it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel

from poller.config_values import split_address

if TYPE_CHECKING:
    from poller.driver import Driver, DriverContext, PollSpec
    from poller.profiles import LoadedProfile

# The registry line: the protocol packages, in the order `hwpoller profiles` lists them.
PACKAGES = ("poller.snmp", "poller.ipmi", "poller.redfish")


class Resource(Protocol):
    """A process-wide resource a protocol's drivers share (a semaphore, a thread pool)."""

    def close(self) -> None:
        """Release it at shutdown, without waiting for hung device calls."""
        ...


class TargetView(Protocol):
    """What a protocol may read of a target to build its options: its own keys by name."""

    name: str
    address: str

    def protocol_key(self, key: str) -> object:
        """The value of one of the protocol's own target keys (see target_fields)."""
        ...


class SettingsView(Protocol):
    """What a protocol may read of settings: its own keys by name, set or defaulted."""

    def protocol_key(self, key: str) -> object:
        """The value of one of the protocol's own settings keys (see settings_fields)."""
        ...

    def is_set(self, key: str) -> bool:
        """Whether the key was written in the config (rather than defaulted)."""
        ...


# A field definition as pydantic's create_model takes it: (annotation, default or Field()).
FieldDef = tuple[object, object]


def _no_options(_target: TargetView, _settings: SettingsView) -> BaseModel:
    return NoOptions()


class NoOptions(BaseModel):
    """The options of a protocol that has none."""

    model_config = {"frozen": True}


@dataclass(frozen=True)
class ProtocolSpec:
    """Everything hwpoller needs to know about one protocol."""

    name: str
    default_port: int
    # The credentials model; its `protocol: Literal[name]` field is the union's tag.
    auth_model: type[BaseModel]
    # The model of one profile file with `protocol: name`; it has name, protocol,
    # description, include (and usually match) keys.
    profile_model: type[BaseModel]
    # Turns a validated profile into what drivers use, given every profile it includes
    # (transitively, depth first, each once; includes are resolved and checked by the
    # loader). Raises ValueError with a message when the profile is unusable.
    compile_profile: Callable[[BaseModel, str, Sequence[BaseModel]], LoadedProfile]
    # "module:factory": factory(spec: PollSpec, context: DriverContext) -> Driver.
    driver: str
    # Extra keys of a target of this protocol, e.g. {"ipmi": (IpmiOptions, Field(...))}.
    target_fields: Mapping[str, FieldDef] = field(default_factory=dict)
    # Extra keys of `settings:` for this protocol (concurrency caps and defaults).
    settings_fields: Mapping[str, FieldDef] = field(default_factory=dict)
    # The target's protocol options as the driver sees them (PollSpec.options); frozen and
    # comparable, so that a reload can tell whether the target changed.
    options: Callable[[TargetView, SettingsView], BaseModel] = _no_options
    # The shared resource of this protocol's drivers, created on first use.
    resource: Callable[[SettingsView], Resource] | None = None
    # host, port of a target address; the default splits host[:port].
    parse_address: Callable[[str, int], tuple[str, int]] = split_address
    # Whether poller.compose.checked() filters the driver's readings (physically possible
    # values, one series per identity); False when the driver does it itself.
    check_readings: bool = True
    # One line per way a profile of this protocol is recognised, for `hwpoller profiles`.
    describe_match: Callable[[BaseModel], list[str]] = lambda _profile: []
    # What every target of this protocol is, whatever it reads: "server" for a BMC protocol
    # (IPMI, Redfish), so that the status page calls a BMC a server even before it first
    # answers. None: the readings decide (SNMP speaks for UPSs, CRACs and monitors alike).
    role: str | None = None

    def driver_factory(self) -> Callable[[PollSpec, DriverContext], Driver]:
        """Import the driver module and return its factory."""
        module_name, _, attr = self.driver.partition(":")
        factory: Callable[[PollSpec, DriverContext], Driver] = getattr(
            importlib.import_module(module_name), attr
        )
        return factory


@cache
def protocols() -> tuple[ProtocolSpec, ...]:
    """Every registered protocol, in PACKAGES order."""
    found = []
    for package in PACKAGES:
        spec = importlib.import_module(package).PROTOCOL
        if not isinstance(spec, ProtocolSpec):  # pragma: no cover - a packaging bug
            raise TypeError(f"{package}.PROTOCOL is not a ProtocolSpec")
        found.append(spec)
    return tuple(found)


def names() -> tuple[str, ...]:
    """The protocol names, as written in `protocol:`."""
    return tuple(p.name for p in protocols())


def get(name: str) -> ProtocolSpec:
    """The record of one protocol (KeyError if there is none of that name)."""
    for spec in protocols():
        if spec.name == name:
            return spec
    raise KeyError(name)


def by_name() -> Mapping[str, ProtocolSpec]:
    """Every protocol by name."""
    return {p.name: p for p in protocols()}
