"""SNMP credentials and per-target options, as written in the config."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, SecretStr, model_validator

from poller.config_values import Name, StrictModel, read_secret_files

_V3_ONLY = (
    "username",
    "security_level",
    "auth_protocol",
    "auth_password",
    "auth_password_file",
    "priv_protocol",
    "priv_password",
    "priv_password_file",
    "allow_insecure_protocols",
)
_V12_ONLY = ("community", "community_file")


def _snmp_version(value: Any) -> Any:
    """The SNMP version as "1", "2c" or "3"; YAML's unquoted 1 and 3 are accepted as such."""
    # bool is an int in Python: `version: true` must not silently mean version 1.
    if isinstance(value, int) and not isinstance(value, bool) and value in (1, 3):
        return str(value)
    if isinstance(value, str) and value.strip() in ("1", "2c", "3"):
        return value.strip()
    if isinstance(value, bool):
        raise ValueError(  # noqa: TRY004 - a ValueError is what pydantic reports with the path
            f"version must be 1, 2c or 3, got {str(value).lower()} (YAML reads unquoted "
            "true/false/yes/no/on/off as booleans)"
        )
    hint = " (write 2c for SNMPv2c)" if value in (2, "2", 2.0) else ""
    raise ValueError(f"version must be 1, 2c or 3, got {value!r}{hint}")


class SnmpAuth(StrictModel):
    """Named SNMP credentials (v1/v2c community or SNMPv3 USM user)."""

    protocol: Literal["snmp"]
    version: Annotated[Literal["1", "2c", "3"], BeforeValidator(_snmp_version)] = "2c"
    community: SecretStr | None = None
    username: Name | None = None
    security_level: Literal["noAuthNoPriv", "authNoPriv", "authPriv"] | None = None
    auth_protocol: Literal["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"] | None = None
    auth_password: SecretStr | None = None
    priv_protocol: Literal["DES", "AES", "AES192", "AES256"] | None = None
    priv_password: SecretStr | None = None
    # MD5 and DES are broken; they work only when the operator says so explicitly.
    allow_insecure_protocols: bool = False

    @model_validator(mode="before")
    @classmethod
    def _files(cls, data: Any) -> Any:
        if isinstance(data, dict):
            # Keys of another version are refused before any secret file is read for them.
            try:
                version = _snmp_version(data.get("version", "2c"))
            except ValueError:
                version = None  # reported by the field validator
            other = _V3_ONLY if version in ("1", "2c") else _V12_ONLY if version == "3" else ()
            given = [k for k in other if k in data]
            if given:
                verb = "does" if len(given) == 1 else "do"
                why = "only version 3 has users" if version != "3" else "version 3 has users"
                raise ValueError(
                    f"{', '.join(given)} {verb} not apply to SNMP version {version} ({why})"
                )
        return read_secret_files(data, ("community", "auth_password", "priv_password"))

    @model_validator(mode="after")
    def _consistent(self) -> SnmpAuth:
        if self.version in ("1", "2c"):
            if self.community is None:
                raise ValueError(f"SNMP v{self.version} needs community (or community_file)")
            return self
        if not self.username:
            raise ValueError("SNMP version 3 needs username")
        level = self.security_level or "authPriv"
        needs_auth = level in ("authNoPriv", "authPriv")
        if needs_auth and (self.auth_protocol is None or self.auth_password is None):
            raise ValueError(f"security_level {level} needs auth_protocol and auth_password")
        if level == "authPriv" and (self.priv_protocol is None or self.priv_password is None):
            raise ValueError("security_level authPriv needs priv_protocol and priv_password")
        for key in ("auth_password", "priv_password"):
            secret = getattr(self, key)
            if secret is not None and len(secret.get_secret_value()) < 8:
                raise ValueError(f"{key} must be at least 8 characters (RFC 3414)")
        weak = [p for p in (self.auth_protocol, self.priv_protocol) if p in ("MD5", "DES")]
        if weak and not self.allow_insecure_protocols:
            raise ValueError(
                f"{' and '.join(weak)} are insecure; use SHA256 and AES, or set "
                "allow_insecure_protocols: true"
            )
        return self

    @property
    def effective_security_level(self) -> str:
        """The v3 security level, authPriv when left out."""
        return self.security_level or "authPriv"


class SnmpOptions(StrictModel):
    """What the SNMP driver needs of a target beyond address and credentials."""

    # GETBULK max-repetitions: the size of a never-seen table's first request.
    max_repetitions: int = 10
    # Whether max_repetitions was written for the target or in settings: a limit to keep to,
    # for fragile cards, rather than a starting size.
    max_repetitions_fixed: bool = False
    # Requests of one poll in flight at once (independent tables walked side by side).
    max_inflight: int = 2
    # SNMPv2c client: "native" (poller.snmp.wire, every column per GETBULK) or "gufo"
    # (gufo-snmp, as SNMPv1 and SNMPv3 always are).
    client: Literal["native", "gufo"] = "native"
