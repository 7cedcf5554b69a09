"""IPMI driver: polls a server BMC over RMCP+ with pyghmi, in threads, one session per BMC.

pyghmi blocks, so every step runs as a job in the shared IPMI thread pool, and every job
has its own deadline here as well as the scheduler's deadline for the whole poll: a BMC
that hangs a thread costs that thread, never the target's poll slot. Jobs for one BMC run
strictly one after another (never two commands in flight to a BMC); a job that outlived
its deadline must finish before the next one for that BMC starts.

The session is kept across polls (BMCs allow only a handful) and replaced after an error;
the scheduler's backoff spaces out reconnects. A rejected password is not retried for
AUTH_HOLD_OFF seconds, so a wrong credential never locks the BMC account.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

from poller.driver import DriverContext, PollSpec
from poller.errors import AuthError, DeviceError, DeviceTimeoutError, UnsupportedError
from poller.ipmi import IpmiResource, sdr
from poller.ipmi.auth import IpmiAuth, IpmiOptions
from poller.ipmi.profile import IpmiLocationRule, LoadedIpmiProfile, match_ipmi
from poller.ipmi.readings import normalize_sensors
from poller.ipmi.session import BmcSession, Response
from poller.model import DeviceData, DeviceInfo, LimitType

T = TypeVar("T")

# How long a rejected login keeps hwpoller from trying again (BMCs lock accounts out after
# a few failures; the operator fixes the password and reloads, which starts afresh).
AUTH_HOLD_OFF = 300.0
# Thresholds rarely change; they are re-read this often, and after every SDR change.
THRESHOLD_REFRESH = 600.0
# Sensors read per thread job: bounds a job's length while keeping executor hops few.
SENSORS_PER_JOB = 16


class IpmiDriver:
    """Polls one BMC: SDR once (cached), then readings and thresholds over one session."""

    def __init__(self, spec: PollSpec, context: DriverContext) -> None:
        assert isinstance(spec.auth, IpmiAuth)  # noqa: S101 - config cross-check guarantees it
        assert isinstance(spec.options, IpmiOptions)  # noqa: S101 - the registry builds it
        self._spec = spec
        self._auth = spec.auth
        self._options = spec.options
        self._context = context
        self._executor = context.resource("ipmi", IpmiResource)
        # One job's deadline: half the poll's, so a slow step still leaves room to fail fast.
        self._job_timeout = max(1.0, min(10.0, spec.timeout / 2))
        self._session: BmcSession | None = None
        self._inflight: concurrent.futures.Future[Any] | None = None
        self._ident: sdr.DeviceId | None = None
        self._profile: LoadedIpmiProfile | None = None
        self._rules: tuple[IpmiLocationRule, ...] = ()
        self._signature: tuple[int, int, int] | None = None
        self._sensors: tuple[sdr.SdrSensor, ...] = ()
        self._thresholds: dict[tuple[int, int], dict[LimitType, float]] = {}
        # When thresholds were last read (monotonic); None: never, so the first poll reads
        # them. (A 0.0 sentinel looks "recent" on a host up for less than THRESHOLD_REFRESH.)
        self._thresholds_at: float | None = None
        self._auth_failed: tuple[float, str] | None = None
        self.logins = 0  # login attempts made, for tests and the benchmark

    # -- thread jobs -------------------------------------------------------------------

    @staticmethod
    async def _settled(future: concurrent.futures.Future[Any]) -> None:
        """Wait for an earlier job to end, whatever its outcome: the poll that started it
        has already reported its failure, so its exception is consumed here rather than
        left for asyncio to log as "never retrieved"."""
        wrapped = asyncio.wrap_future(future)
        wrapped.add_done_callback(lambda f: f.cancelled() or f.exception())
        await asyncio.wait([wrapped])

    async def _job(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one blocking step in the IPMI pool under its own deadline, one at a time."""
        previous = self._inflight
        if previous is not None and not previous.done():
            # A job that outlived its deadline still owns the BMC: wait for it, not past
            # this job's own deadline.
            try:
                async with asyncio.timeout(self._job_timeout):
                    await self._settled(previous)
            except TimeoutError:
                raise DeviceTimeoutError("an earlier request to the BMC is still hung") from None
        future = self._executor.executor.submit(fn, *args)
        self._inflight = future
        try:
            async with asyncio.timeout(self._job_timeout):
                return await asyncio.wrap_future(future)
        except TimeoutError:
            message = f"the BMC did not answer within {self._job_timeout:.1f}s"
            if self._session is not None:
                self._session.abort(message)  # frees the thread now, not after pyghmi's retries
            self._drop_session()
            raise DeviceTimeoutError(message) from None

    def _raw(self) -> Callable[[int, int, bytes, int], Response]:
        session = self._session
        if session is None:
            raise DeviceTimeoutError("no session")
        return session.raw

    def _drop_session(self) -> None:
        """Forget the session; it is logged out once no job uses it any more."""
        session, self._session = self._session, None
        if session is None:
            return
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            inflight.add_done_callback(lambda _: session.close())
            return
        with contextlib.suppress(RuntimeError):  # the pool is shut down: process exiting
            self._inflight = self._executor.executor.submit(session.close)

    # -- connecting --------------------------------------------------------------------

    def _login(self) -> BmcSession:
        password = self._auth.password.get_secret_value() if self._auth.password else ""
        kg = self._auth.kg.get_secret_value() if self._auth.kg else None
        return BmcSession(
            self._spec.host,
            self._spec.port,
            self._auth.username,
            password,
            self._auth.privilege,
            kg=kg,
            allow_v15=self._options.allow_ipmi_v1_5,
        )

    async def _connect(self) -> None:
        if not self._auth.username and not self._options.allow_anonymous:
            raise UnsupportedError(
                "anonymous IPMI login is refused; set a username or ipmi.allow_anonymous"
            )
        if self._auth_failed is not None:
            failed_at, message = self._auth_failed
            if time.monotonic() - failed_at < AUTH_HOLD_OFF:
                raise AuthError(f"{message}; not retried for {AUTH_HOLD_OFF:.0f}s")
            self._auth_failed = None
        self.logins += 1
        try:
            self._session = await self._job(self._login)
        except AuthError as exc:
            self._auth_failed = (time.monotonic(), str(exc))
            raise
        self._ident = await self._job(sdr.device_id, self._raw())
        self._profile = self._pick_profile(self._ident.manufacturer_id)
        self._rules = self._profile.rules

    def _pick_profile(self, manufacturer_id: int) -> LoadedIpmiProfile:
        if self._spec.profile is not None:
            try:
                return self._context.profiles.typed(self._spec.profile, LoadedIpmiProfile)
            except KeyError:
                raise UnsupportedError(
                    f"profile {self._spec.profile!r} is not an IPMI profile"
                ) from None
        found = match_ipmi(self._context.profiles.of_type(LoadedIpmiProfile), manufacturer_id)
        if found is None:
            raise UnsupportedError(f"no IPMI profile for manufacturer id {manufacturer_id}")
        return found

    # -- polling -----------------------------------------------------------------------

    def _read_batch(
        self, batch: tuple[sdr.SdrSensor, ...], with_thresholds: bool
    ) -> list[tuple[sdr.SdrSensor, sdr.SensorValue | None, dict[LimitType, float] | None]]:
        raw = self._raw()
        out = []
        for sensor in batch:
            value = sdr.read_sensor(raw, sensor)
            limits = sdr.read_thresholds(raw, sensor) if with_thresholds and value else None
            out.append((sensor, value, limits))
        return out

    async def poll(self) -> DeviceData:
        """Read every temperature, fan and power-supply sensor once."""
        if self._session is None or not self._session.alive:
            self._drop_session()
            await self._connect()
        try:
            return await self._poll()
        except DeviceError:
            self._drop_session()
            raise

    async def _poll(self) -> DeviceData:
        session, ident, profile = self._session, self._ident, self._profile
        if session is None or ident is None or profile is None:
            raise DeviceTimeoutError("the session was lost")
        signature = await self._job(sdr.repository_signature, self._raw())
        if signature != self._signature:
            self._sensors = await self._job(
                sdr.load_sensors, self._raw(), self._spec.host, self._spec.port, ident, signature
            )
            self._signature = signature
            self._thresholds_at = None
        wanted = tuple(s for s in self._sensors if s.sensor_type in (0x01, 0x04, 0x08))
        refresh = (
            self._thresholds_at is None
            or time.monotonic() - self._thresholds_at > THRESHOLD_REFRESH
        )
        values: dict[tuple[int, int], sdr.SensorValue] = {}
        thresholds = {} if refresh else self._thresholds
        for start in range(0, len(wanted), SENSORS_PER_JOB):
            batch = wanted[start : start + SENSORS_PER_JOB]
            for sensor, value, limits in await self._job(self._read_batch, batch, refresh):
                key = (sensor.lun, sensor.number)
                if value is not None:
                    values[key] = value
                if limits is not None:
                    thresholds[key] = limits
        if refresh:
            self._thresholds, self._thresholds_at = thresholds, time.monotonic()
        readings = normalize_sensors(self._sensors, values, thresholds, self._rules)
        info = DeviceInfo(
            vendor=profile.vendor_for(ident.manufacturer_id),
            firmware=ident.firmware,
            profile=profile.name,
            protocol=session.version,
        )
        return DeviceData(info=info, readings=tuple(readings))

    async def close(self) -> None:
        """Log out of the BMC (after any job still running for it)."""
        self._drop_session()
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            async with asyncio.timeout(self._job_timeout):
                await self._settled(inflight)
