"""Redfish: server BMCs over HTTPS (DMTF Redfish), polled with aiohttp.

auth (credentials, TLS trust, target options, addresses), profile (vendor rules as data),
client (one HTTP client per target: sessions, caps, hostile-service limits), readings
(Redfish resources -> normalised readings), driver (the poll). Only the driver module
imports the HTTP client.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, ValidationInfo

from poller.protocols import ProtocolSpec, SettingsView, TargetView
from poller.redfish.auth import RedfishAuth, RedfishOptions, parse_redfish_address
from poller.redfish.profile import RedfishProfile, compile_profile, describe_match


def _check_address(options: RedfishOptions, info: ValidationInfo) -> RedfishOptions:
    """Validate a Redfish target's address with the Redfish parser (URLs included).

    The generic address check runs before the target's protocol is known, so it applies
    host[:port] rules; this runs after both (the `redfish:` key is validated even when left
    out) and reports a bad scheme, path or port at load time rather than at the first poll.
    """
    address = info.data.get("address")
    if info.data.get("protocol") == "redfish" and isinstance(address, str):
        try:
            parse_redfish_address(address, 443)
        except ValueError as exc:
            raise ValueError(f"address: {exc}") from None
    return options


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
    target_fields={
        "redfish": (
            Annotated[RedfishOptions, AfterValidator(_check_address)],
            Field(default_factory=RedfishOptions, validate_default=True),
        )
    },
    options=_options,
    parse_address=parse_redfish_address,
    describe_match=describe_match,
    role="server",
)

__all__ = ["PROTOCOL", "RedfishAuth", "RedfishOptions"]
