"""Redfish credentials, per-target options and target addresses, as written in the config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator

from poller.config_values import MAX_NAME, StrictModel, read_secret_files, split_address

# A CA bundle holds a handful of certificates; anything bigger is the wrong file.
MAX_CA_FILE_BYTES = 1024 * 1024


class RedfishAuth(StrictModel):
    """Named Redfish credentials and the TLS trust that goes with them."""

    protocol: Literal["redfish"]
    username: Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
    password: SecretStr
    # PEM file of the CA (or the self-signed certificate) the BMCs' certificates chain to;
    # read when the config is loaded, so a missing file is a config error, not a poll error.
    ca_file: str | None = None
    # The PEM text of ca_file (filled in at load time; not a config key of its own).
    ca_pem: str | None = Field(default=None, exclude=True, repr=False)
    # Accept any certificate (factory self-signed BMC certificates); visible in the docs as
    # the insecure choice it is.
    tls_insecure: bool = False
    # auto: a session when the service offers a SessionService, else basic auth;
    # always: a session or fail; never: basic auth on every request.
    session: Literal["auto", "always", "never"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _files(cls, data: Any) -> Any:
        data = read_secret_files(data, ("password",))
        if isinstance(data, dict) and "ca_pem" in data:
            raise ValueError("ca_pem is not a config key; use ca_file")
        if isinstance(data, dict) and isinstance(data.get("ca_file"), str):
            data = {**data, "ca_pem": _read_ca_file(data["ca_file"])}
        return data

    @model_validator(mode="after")
    def _trust(self) -> RedfishAuth:
        if self.tls_insecure and self.ca_file:
            raise ValueError("give either ca_file or tls_insecure: true, not both")
        return self


def _read_ca_file(path: str) -> str:
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_CA_FILE_BYTES + 1)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ValueError(f"ca_file: cannot read {path}: {reason}") from None
    if len(data) > MAX_CA_FILE_BYTES:
        raise ValueError(f"ca_file: {path} is larger than 1 MiB; is it a CA bundle?")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(f"ca_file: {path} is not a PEM file (binary content)") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError(f"ca_file: {path} holds no PEM certificate (BEGIN CERTIFICATE)")
    return text


class RedfishOptions(StrictModel):
    """Per-target Redfish options (the target's `redfish:` key)."""

    # Requests in flight to this BMC at once: BMC web servers are small and fall over
    # (or answer 503) under parallel load.
    max_concurrency: int = Field(default=2, ge=1, le=16)
    # Use $expand when the service says it supports it: a collection and its members in one
    # request instead of one per member.
    expand: bool = True


def parse_redfish_address(address: str, default_port: int) -> tuple[str, int]:
    """host, port of `host[:port]` (https) or an `http://` / `https://` URL."""
    text = address.strip()
    if "://" not in text:
        return split_address(text, default_port)
    scheme, _, _ = text.partition("://")
    if scheme.lower() not in ("http", "https"):
        raise ValueError(
            f"address {address!r}: scheme must be http or https "
            "(or give host[:port], which means https)"
        )
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"address {address!r}: {exc}") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"address {address!r}: give the service's address only, without a path "
            "(hwpoller starts at /redfish/v1/)"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"address {address!r}: credentials go in auths:, not in the address")
    host = parts.hostname
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"address {address!r} has no valid host")
    if port is None:
        return host, 80 if scheme.lower() == "http" else default_port
    if not 0 < port < 65536:
        raise ValueError(f"address {address!r}: port must be 1-65535")
    return host, port


def address_scheme(address: str) -> str:
    """http or https: the scheme a target address asks for (https unless it says http)."""
    text = address.strip()
    return "http" if text.lower().startswith("http://") else "https"


__all__ = [
    "RedfishAuth",
    "RedfishOptions",
    "address_scheme",
    "parse_redfish_address",
]
