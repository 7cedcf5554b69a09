"""The `cluster:` section: where etcd is, who this member is, how fast a dead member's
targets move. Validated like the rest of the config (unknown keys are errors)."""

from __future__ import annotations

import socket
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, model_validator

from poller.config_values import MAX_NAME, StrictModel, parse_duration, read_secret_files

_MEMBER_RE = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$"
_PREFIX_RE = r"^(/[A-Za-z0-9_.:@-]+)+$"


def _endpoint(url: str) -> str:
    """An etcd client URL: http(s)://host:port, nothing else (a path would be ignored by
    etcd's gateway and hide a typo)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: an etcd endpoint is http://host:port or https://host:port")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: port must be 1-65535") from None
    if not parts.hostname or port is None:
        raise ValueError(f"{url!r}: give the host and the client port, e.g. http://10.0.0.5:2379")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{url!r}: only scheme, host and port are allowed (no path, no user)")
    return url.rstrip("/")


def _ttl(value: float) -> float:
    # etcd grants whole seconds; below 2s a garbage-collection pause or a busy etcd already
    # makes a healthy member lose its lease, above 5 minutes a dead member's devices go
    # unwatched for too long.
    if not 2 <= value <= 300:
        raise ValueError(f"must be between 2s and 300s (got {value:g}s)")
    if value != int(value):
        raise ValueError(f"etcd leases are whole seconds (got {value:g}s)")
    return value


LeaseTtl = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_ttl)]


class ClusterSettings(StrictModel):
    """Cluster mode: members share the targets through etcd (docs/cluster.md)."""

    etcd: list[Annotated[str, AfterValidator(_endpoint)]] = Field(min_length=1, max_length=16)
    member: str = Field(default_factory=socket.gethostname, pattern=_MEMBER_RE, max_length=MAX_NAME)
    lease_ttl: LeaseTtl = 10.0
    prefix: str = Field(default="/hwpoller", pattern=_PREFIX_RE, max_length=200)
    site: str | None = Field(default=None, min_length=1, max_length=256)
    # How many members the cluster should have: exported, so that a rule can say when
    # fewer are alive. Optional; without it the rule compares with the scrape targets.
    expected_members: int | None = Field(default=None, ge=1, le=1000)
    # TLS towards etcd: a private CA, and a client certificate when etcd asks for one.
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # etcd's own authentication (`etcdctl user add`); the password never inline by necessity.
    username: str | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    password: SecretStr | None = None
    # Seconds one etcd request may take before the next endpoint is tried; default 2s, or
    # a quarter of lease_ttl when that is shorter (a refresh must fit within the lease).
    request_timeout: Annotated[float | None, BeforeValidator(parse_duration)] = Field(
        default=None, gt=0, le=30
    )

    @model_validator(mode="before")
    @classmethod
    def _files(cls, data: Any) -> Any:
        return read_secret_files(data, ("password",))

    @model_validator(mode="after")
    def _consistent(self) -> ClusterSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password (or password_file) go together")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        tls = any(e.startswith("https://") for e in self.etcd)
        if not tls and (self.ca_file or self.cert_file):
            raise ValueError("ca_file/cert_file/key_file need https:// endpoints")
        if self.request_timeout is not None and self.request_timeout >= self.lease_ttl / 2:
            raise ValueError(
                f"request_timeout ({self.request_timeout:g}s) must be under half of lease_ttl"
            )
        return self

    def timeout(self) -> float:
        """The etcd request timeout in seconds."""
        return self.request_timeout or min(2.0, self.lease_ttl / 4)
