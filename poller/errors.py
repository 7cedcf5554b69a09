"""Error tree: every device failure carries a short, fixed `reason` used as a metric label."""

from __future__ import annotations

from typing import ClassVar

# Every value a poll error can have in the `reason` label of hwpoller_poll_errors_total.
REASONS = ("timeout", "unreachable", "auth", "protocol", "unsupported", "internal")


class PollerError(Exception):
    """Base of every error hwpoller raises on purpose."""


class ConfigError(PollerError):
    """One or more configuration problems, each naming its file and key path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class ProfileError(PollerError):
    """A profile file in mibs/ (or a user profile directory) is malformed."""


class DeviceError(PollerError):
    """A device could not be polled; `reason` says why in one word."""

    reason: ClassVar[str] = "protocol"


class DeviceTimeoutError(DeviceError):
    """The device did not answer in time (also: wrong SNMP community, which agents ignore)."""

    reason = "timeout"


class UnreachableError(DeviceError):
    """The device's address could not be reached at all (no route, refused, bad name)."""

    reason = "unreachable"


class AuthError(DeviceError):
    """The device rejected our credentials."""

    reason = "auth"


class ProtocolError(DeviceError):
    """The device answered with something we could not understand."""

    reason = "protocol"


class UnsupportedError(DeviceError):
    """No profile matches the device, or it refuses what the security policy requires."""

    reason = "unsupported"
