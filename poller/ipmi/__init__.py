"""IPMI: server BMCs over RMCP+ (IPMI 2.0 LAN), polled with pyghmi in worker threads,
by default in a worker process of their own.

auth (credentials, target options), profile (vendor rules as data), session (one RMCP+
session with hwpoller's security policy), sdr (sensor data repository and readings),
readings (SDR sensors -> normalised readings), driver (the poll), proxy (the driver
factory; the per-target proxy and the worker's client), worker (the worker process),
channel (the messages between them).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from poller.ipmi.auth import IpmiAuth, IpmiOptions
from poller.ipmi.profile import IpmiProfile, compile_profile, describe_match
from poller.protocols import ProtocolSpec, SettingsView, TargetView

if TYPE_CHECKING:
    from poller.ipmi.proxy import WorkerClient


class IpmiResource:
    """What IPMI drivers share: the bounded thread pool blocking pyghmi calls run in
    (settings.ipmi_threads), or, with settings.ipmi_process, the worker process that holds
    the drivers and that pool."""

    def __init__(self, threads: int, process: bool = False) -> None:
        self.threads = threads
        self.process = process
        self._executor: ThreadPoolExecutor | None = None
        self._worker: WorkerClient | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The pool, created on first use."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="ipmi")
        return self._executor

    @property
    def worker(self) -> WorkerClient:
        """The worker process's client, created on first use (the process on first poll)."""
        if self._worker is None:
            from poller.ipmi.proxy import WorkerClient  # noqa: PLC0415 - keep this module light

            self._worker = WorkerClient(self.threads)
        return self._worker

    def close(self) -> None:
        """Release the pool without waiting for hung device calls; stop the worker."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._worker is not None:
            self._worker.close()
            self._worker = None


def _options(target: TargetView, _settings: SettingsView) -> BaseModel:
    options = target.protocol_key("ipmi")
    return options if isinstance(options, IpmiOptions) else IpmiOptions()


def _resource(settings: SettingsView) -> IpmiResource:
    threads = settings.protocol_key("ipmi_threads")
    process = settings.protocol_key("ipmi_process")
    return IpmiResource(threads if isinstance(threads, int) else 32, process is not False)


PROTOCOL = ProtocolSpec(
    name="ipmi",
    default_port=623,
    auth_model=IpmiAuth,
    profile_model=IpmiProfile,
    compile_profile=compile_profile,
    driver="poller.ipmi.proxy:make_driver",
    target_fields={"ipmi": (IpmiOptions, Field(default_factory=IpmiOptions))},
    # Each is an OS thread blocked in pyghmi; thousands would only exhaust memory.
    settings_fields={
        "ipmi_threads": (int, Field(default=32, ge=1, le=1024)),
        # pyghmi in a worker process of its own (own GIL), not beside the SNMP event loop.
        "ipmi_process": (bool, Field(default=True)),
    },
    options=_options,
    resource=_resource,
    describe_match=describe_match,
    role="server",
)

__all__ = ["PROTOCOL", "IpmiAuth", "IpmiOptions", "IpmiResource"]
