"""What each found device is, decided by the code `hwpoller run` polls it with.

The credentials become config auths (file paths, never secret values), each found device a
target of a config parsed by the real loader, and each target is polled once through
driver_for() and TargetRunner.poll_once(), as `hwpoller probe` does: the profiles, vendor
and model reported are those the drivers' own detection picked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from poller import protocols
from poller.config import Config, parse_config
from poller.discover.probes import Endpoint, Found
from poller.driver import DriverContext, PollSpec, driver_for
from poller.profiles import ProfileSet
from poller.scheduler import TargetRunner
from poller.store import Store

log = logging.getLogger("hwpoller.discover")

AUTH_NAMES = {"snmp": "discovered-snmp", "ipmi": "discovered-ipmi", "redfish": "discovered-redfish"}
# Detection polls at once: each IPMI one holds a thread, each login a BMC session.
DETECT_CONCURRENCY = 16
# How long closing a driver after its one poll may take (an IPMI logout).
CLOSE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the command line says about logging in, as config auths with secret files."""

    community_file: str | None = None
    snmp_version: str = "2c"
    ipmi_user: str | None = None
    ipmi_password_file: str | None = None
    ipmi_privilege: str = "user"
    redfish_user: str | None = None
    redfish_password_file: str | None = None
    redfish_ca_file: str | None = None
    redfish_tls_insecure: bool = False

    @property
    def protocols(self) -> tuple[str, ...]:
        """The protocols there are credentials for, in registry order: the ones scanned."""
        given = {
            "snmp": self.community_file is not None,
            "ipmi": self.ipmi_user is not None,
            "redfish": self.redfish_user is not None,
        }
        return tuple(name for name in protocols.names() if given.get(name))

    def auths(self) -> dict[str, dict[str, Any]]:
        """The `auths:` section: secrets by absolute file path, so the config works from any
        directory and holds no secret itself."""
        out: dict[str, dict[str, Any]] = {}
        if self.community_file is not None:
            out[AUTH_NAMES["snmp"]] = {
                "protocol": "snmp",
                "version": self.snmp_version,
                "community_file": _absolute(self.community_file),
            }
        if self.ipmi_user is not None:
            ipmi: dict[str, Any] = {"protocol": "ipmi", "username": self.ipmi_user}
            if self.ipmi_password_file is not None:
                ipmi["password_file"] = _absolute(self.ipmi_password_file)
            ipmi["privilege"] = self.ipmi_privilege
            out[AUTH_NAMES["ipmi"]] = ipmi
        if self.redfish_user is not None:
            redfish: dict[str, Any] = {"protocol": "redfish", "username": self.redfish_user}
            if self.redfish_password_file is not None:
                redfish["password_file"] = _absolute(self.redfish_password_file)
            if self.redfish_ca_file is not None:
                redfish["ca_file"] = _absolute(self.redfish_ca_file)
            if self.redfish_tls_insecure:
                redfish["tls_insecure"] = True
            out[AUTH_NAMES["redfish"]] = redfish
        return out


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute())


@dataclass(frozen=True, slots=True)
class Discovered:
    """A found device with what its driver made of it."""

    found: Found
    name: str
    address: str  # as written in the config
    profiles: tuple[str, ...] = ()  # applied, the primary first; empty if detection failed
    vendor: str = ""
    model: str = ""
    firmware: str = ""
    reason: str = ""  # the poll's failure reason (timeout, auth, unsupported, ...); "" if up
    message: str = ""

    @property
    def endpoint(self) -> Endpoint:
        """Where it answered."""
        return self.found.endpoint

    @property
    def detected(self) -> bool:
        """Whether the driver polled it and picked its profiles."""
        return bool(self.profiles) and not self.reason


def config_address(endpoint: Endpoint, scheme: str = "https") -> str:
    """A found endpoint as a target's `address:` (the port only when not the default)."""
    host, port = endpoint.host, endpoint.port
    if endpoint.protocol == "redfish" and scheme == "http":
        return f"http://{host}" if port == 80 else f"http://{host}:{port}"
    default = protocols.get(endpoint.protocol).default_port
    return host if port == default else f"{host}:{port}"


def _document(
    credentials: Credentials, targets: Sequence[Mapping[str, Any]], timeout: float
) -> dict[str, Any]:
    """The config detection polls with. IPMI runs in this process (one poll per BMC does
    not need the worker); no notification receiver."""
    return {
        "settings": {
            "interval": max(1.0, timeout),
            "timeout": timeout,
            "notification_address": None,
            "ipmi_process": False,
        },
        "auths": credentials.auths(),
        "targets": list(targets),
    }


def check_credentials(credentials: Credentials) -> Config:
    """Validate the credentials with the config loader (reading the secret files) before
    anything is sent; ConfigError says what is wrong, never the secret."""
    return parse_config(yaml.safe_dump(_document(credentials, [], 10.0)), "<command line>")


def community(config: Config) -> str:
    """The SNMP community the loader read from the community file."""
    auth = config.auths.get(AUTH_NAMES["snmp"])
    secret = getattr(auth, "community", None)
    return secret.get_secret_value() if secret is not None else ""


async def detect(
    found: Sequence[Found],
    names: Mapping[Endpoint, str],
    credentials: Credentials,
    profiles: ProfileSet,
    *,
    scheme: str = "https",
    poll_timeout: float = 10.0,
    deadline: float | None = None,
) -> list[Discovered]:
    """Poll every found device once with its protocol's driver; `deadline` (monotonic)
    bounds the whole detection."""
    targets = [
        {
            "name": names[f.endpoint],
            "address": config_address(f.endpoint, scheme),
            "protocol": f.endpoint.protocol,
            "auth": AUTH_NAMES[f.endpoint.protocol],
        }
        for f in found
    ]
    config = parse_config(
        yaml.safe_dump(_document(credentials, targets, poll_timeout)), "<discover>"
    )
    context = DriverContext(profiles, config.settings)
    store = Store()
    gate = asyncio.Semaphore(DETECT_CONCURRENCY)

    async def one(item: Found, index: int) -> Discovered:
        target = config.targets[index]
        base = Discovered(item, target.name, target.address)
        async with gate:
            spec = PollSpec.from_config(config, target)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining < 0.2:
                    return dataclasses.replace(
                        base, reason="timeout", message="--max-time ran out before detection"
                    )
                spec = dataclasses.replace(spec, timeout=min(spec.timeout, remaining))
            store.register(target.name, target.protocol, {}, ())
            try:
                driver = driver_for(spec, context)
            except Exception as exc:  # a bug for one device must not end the discovery
                log.error("cannot create the driver of %s", target.name, exc_info=True)
                return dataclasses.replace(base, reason="internal", message=type(exc).__name__)
            runner = TargetRunner(spec, {}, driver, store, 0, 0)
            try:
                result = await runner.poll_once()
            finally:
                try:
                    async with asyncio.timeout(CLOSE_TIMEOUT):
                        await runner.driver.close()
                except TimeoutError:
                    pass  # a hung logout: the process ends soon anyway
        if not result.success or result.data is None:
            return dataclasses.replace(base, reason=result.reason, message=result.message)
        info = result.data.info
        applied = tuple(name for name, _ in result.data.sources) or (info.profile,)
        return dataclasses.replace(
            base, profiles=applied, vendor=info.vendor, model=info.model, firmware=info.firmware
        )

    try:
        return list(await asyncio.gather(*(one(f, i) for i, f in enumerate(found))))
    finally:
        context.shutdown()
