"""IPMI: server BMCs over RMCP+ (IPMI 2.0 LAN), polled with pyghmi in worker threads.

auth (credentials, target options), profile (vendor rules as data), session (one RMCP+
session with hwpoller's security policy), sdr (sensor data repository and readings),
readings (SDR sensors -> normalised readings), driver (the poll).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel, Field

from poller.ipmi.auth import IpmiAuth, IpmiOptions
from poller.ipmi.profile import IpmiProfile, compile_profile, describe_match
from poller.protocols import ProtocolSpec, SettingsView, TargetView


class IpmiResource:
    """The bounded thread pool blocking pyghmi calls run in (settings.ipmi_threads)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The pool, created on first use."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="ipmi")
        return self._executor

    def close(self) -> None:
        """Release the pool without waiting for hung device calls."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _options(target: TargetView, _settings: SettingsView) -> BaseModel:
    options = target.protocol_key("ipmi")
    return options if isinstance(options, IpmiOptions) else IpmiOptions()


def _resource(settings: SettingsView) -> IpmiResource:
    threads = settings.protocol_key("ipmi_threads")
    return IpmiResource(threads if isinstance(threads, int) else 32)


PROTOCOL = ProtocolSpec(
    name="ipmi",
    default_port=623,
    auth_model=IpmiAuth,
    profile_model=IpmiProfile,
    compile_profile=compile_profile,
    driver="poller.ipmi.driver:IpmiDriver",
    target_fields={"ipmi": (IpmiOptions, Field(default_factory=IpmiOptions))},
    # Each is an OS thread blocked in pyghmi; thousands would only exhaust memory.
    settings_fields={"ipmi_threads": (int, Field(default=32, ge=1, le=1024))},
    options=_options,
    resource=_resource,
    describe_match=describe_match,
)

__all__ = ["PROTOCOL", "IpmiAuth", "IpmiOptions", "IpmiResource"]
