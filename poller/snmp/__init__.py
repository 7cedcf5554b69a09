"""SNMP: UPS, cooling units, PDUs and environmental monitors, polled with gufo-snmp.

auth (credentials, target options), profile (the profile format, loading, matching),
evaluate (profile + fetched values -> readings), driver (the poll), notifications (the trap
and inform receiver that re-polls a target at once).
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field

from poller.protocols import ProtocolSpec, SettingsView, TargetView
from poller.snmp.auth import SnmpAuth, SnmpOptions
from poller.snmp.profile import SnmpProfile, compile_profile, describe_match


class SnmpResource:
    """The process-wide cap on SNMP requests in flight (settings.snmp_concurrency)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.semaphore = asyncio.Semaphore(limit)

    def close(self) -> None:
        """Nothing to release: sockets belong to the drivers."""


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) else default


def _options(target: TargetView, settings: SettingsView) -> SnmpOptions:
    own = target.protocol_key("max_repetitions")
    inflight = target.protocol_key("max_inflight")
    client = target.protocol_key("snmp_client") or settings.protocol_key("snmp_client")
    return SnmpOptions(
        client="gufo" if client == "gufo" else "native",
        max_repetitions=_int(own, _int(settings.protocol_key("max_repetitions"), 10)),
        max_repetitions_fixed=own is not None or settings.is_set("max_repetitions"),
        max_inflight=_int(inflight, _int(settings.protocol_key("max_inflight"), 2)),
    )


def _resource(settings: SettingsView) -> SnmpResource:
    return SnmpResource(_int(settings.protocol_key("snmp_concurrency"), 256))


PROTOCOL = ProtocolSpec(
    name="snmp",
    default_port=161,
    auth_model=SnmpAuth,
    profile_model=SnmpProfile,
    compile_profile=compile_profile,
    driver="poller.snmp.driver:SnmpDriver",
    target_fields={
        # A limit for this target's GETBULK size (fragile cards), not just a first guess.
        "max_repetitions": (int | None, Field(default=None, ge=1, le=100)),
        # Requests of one poll in flight at once; 1 for cards that drop concurrent requests.
        "max_inflight": (int | None, Field(default=None, ge=1, le=16)),
        # SNMPv2c through the project's own codec (native) or gufo-snmp (v1 and v3 always).
        "snmp_client": (Literal["native", "gufo"] | None, Field(default=None)),
    },
    settings_fields={
        "max_repetitions": (int, Field(default=10, ge=1, le=100)),
        "max_inflight": (int, Field(default=2, ge=1, le=16)),
        "snmp_concurrency": (int, Field(default=256, ge=1, le=65536)),
        "snmp_client": (Literal["native", "gufo"], Field(default="native")),
    },
    options=_options,
    resource=_resource,
    # The driver merges its profiles' readings itself (poller.compose.merge).
    check_readings=False,
    describe_match=describe_match,
)

__all__ = ["PROTOCOL", "SnmpAuth", "SnmpOptions", "SnmpResource"]
