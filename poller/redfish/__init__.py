"""Redfish: server BMCs over HTTPS (DMTF Redfish), polled with aiohttp.

auth (credentials, TLS trust, target options, addresses), profile (vendor rules as data),
client (one HTTP client per target: sessions, caps, hostile-service limits), readings
(Redfish resources -> normalised readings), driver (the poll). Only the driver module
imports the HTTP client.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from poller.protocols import ProtocolSpec, SettingsView, TargetView
from poller.redfish.auth import RedfishAuth, RedfishOptions, parse_redfish_address
from poller.redfish.profile import RedfishProfile, compile_profile, describe_match


def _options(target: TargetView, _settings: SettingsView) -> BaseModel:
    options = target.protocol_key("redfish")
    return options if isinstance(options, RedfishOptions) else RedfishOptions()


PROTOCOL = ProtocolSpec(
    name="redfish",
    default_port=443,
    auth_model=RedfishAuth,
    profile_model=RedfishProfile,
    compile_profile=compile_profile,
    driver="poller.redfish.driver:RedfishDriver",
    target_fields={"redfish": (RedfishOptions, Field(default_factory=RedfishOptions))},
    options=_options,
    parse_address=parse_redfish_address,
    describe_match=describe_match,
)

__all__ = ["PROTOCOL", "RedfishAuth", "RedfishOptions"]
