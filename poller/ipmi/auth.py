"""IPMI credentials and per-target options, as written in the config."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, model_validator

from poller.config_values import MAX_NAME, StrictModel, read_secret_files


class IpmiAuth(StrictModel):
    """Named IPMI (RMCP+) credentials."""

    protocol: Literal["ipmi"]
    username: Annotated[str, Field(max_length=MAX_NAME)] = ""
    password: SecretStr | None = None
    privilege: Literal["callback", "user", "operator", "administrator"] = "user"
    # The BMC key (K_g) for RMCP+ two-key login, when the BMC has one set.
    kg: SecretStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _files(cls, data: Any) -> Any:
        return read_secret_files(data, ("password", "kg"))


class IpmiOptions(StrictModel):
    """Per-target opt-ins to IPMI modes the security defaults refuse."""

    # pyghmi never proposes cipher suite 0 (no authentication), so this only documents intent.
    allow_cipher_suite_0: bool = False
    allow_ipmi_v1_5: bool = False
    allow_anonymous: bool = False
