"""Redfish driver: polls one BMC's Redfish service over HTTP(S) with aiohttp.

A poll reads the Chassis collection, then per chassis its ThermalSubsystem (or the
deprecated Thermal), PowerSubsystem (its supplies and their PowerSupplyMetrics, or Power)
and Sensors, concurrently but never more
than `redfish.max_concurrency` requests at once. The service root, the session and the
manager's firmware are read once and kept across polls; $expand fetches a collection with
its members in one request when the service supports it. Without it, the Sensors collection
is read whole every SENSOR_REFRESH seconds and otherwise only the sensors that gave readings.

A rejected login is tried once per poll, never again within it, so a wrong password costs
one attempt per scheduled poll, and the scheduler's backoff spaces those out. A session
refused mid-poll is DELETEd (by the client) before it is given up.

What a hostile service can cost is bounded: MAX_MEMBERS per collection (across its pages,
at most MAX_PAGES requests), readings.MAX_ARRAY per array, MAX_READINGS per poll; what is
cut is a partial error. Readings are made one chassis at a time, letting other targets'
polls run between chassis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from poller.driver import DriverContext, PollSpec
from poller.errors import (
    AuthError,
    DeviceError,
    DeviceTimeoutError,
    ProtocolError,
    UnreachableError,
    UnsupportedError,
)
from poller.model import DeviceData, DeviceInfo, Reading
from poller.redfish.auth import RedfishAuth, RedfishOptions, address_scheme
from poller.redfish.client import JsonObject, RedfishClient, shown
from poller.redfish.profile import LoadedRedfishProfile, match_redfish
from poller.redfish.readings import (
    ChassisData,
    chassis_readings,
    child,
    disambiguate,
    link,
    present,
    sensor_quantity,
    text,
)

# How often the whole Sensors collection is read when $expand is not available (sensors
# appear with new hardware only); between, only those that gave readings are.
SENSOR_REFRESH = 600.0
# Members read of one collection: a BMC has tens to a few hundred sensors; a service that
# lists thousands is broken, and reading them all would hammer it.
MAX_MEMBERS = 512
# Pages of one collection followed (Members@odata.nextLink): a service paging 512 members
# one by one is hammering itself, and each page is a request of the poll.
MAX_PAGES = 16
# Readings of one poll: a large BMC gives ~1,500 (200 sensors with limits and health);
# past this the rest is cut (a partial error) rather than grow /metrics without bound.
MAX_READINGS = 4096
# Statuses after which a $expand request is given up for plain ones (the service announced
# support it does not have).
EXPAND_REFUSED = frozenset({400, 404, 405, 500, 501})


class RedfishDriver:
    """Polls one Redfish service: root and session once, chassis resources every poll."""

    def __init__(self, spec: PollSpec, context: DriverContext) -> None:
        assert isinstance(spec.auth, RedfishAuth)  # noqa: S101 - config cross-check guarantees it
        assert isinstance(spec.options, RedfishOptions)  # noqa: S101 - the registry builds it
        self._spec = spec
        self._options = spec.options
        self._context = context
        self._client = RedfishClient(
            address_scheme(spec.address),
            spec.host,
            spec.port,
            spec.auth,
            spec.options,
            timeout=max(1.0, spec.timeout),
        )
        self._root: JsonObject | None = None
        self._chassis_path = ""
        self._expand: str | None = None
        self._firmware = ""
        self._profile: LoadedRedfishProfile | None = None
        # Per Sensors collection: the member paths that gave readings, and when the whole
        # collection was last read (monotonic; None: never, so the first poll reads it).
        self._sensor_paths: dict[str, tuple[str, ...]] = {}
        self._sensors_at: dict[str, float] = {}
        self.requests_last_poll = 0  # HTTP requests of the last poll, for tests and docs

    @property
    def logins(self) -> int:
        """Session logins attempted so far."""
        return self._client.logins

    @property
    def has_session(self) -> bool:
        """Whether the driver holds a session token."""
        return self._client.has_session

    # -- the poll -----------------------------------------------------------------------

    async def poll(self) -> DeviceData:
        """Read every chassis' temperatures, fans, leak detectors and power supplies once."""
        start = self._client.requests
        self._client.begin_poll()
        try:
            async with asyncio.timeout(self._spec.timeout):
                return await self._poll()
        except TimeoutError:
            raise DeviceTimeoutError(
                f"the service did not finish answering within {self._spec.timeout:.3g}s"
            ) from None
        except AuthError:
            self._client.drop()  # and DELETEd: a refused session must not be left behind
            self._root = None
            raise
        except (UnreachableError, DeviceTimeoutError):
            self._root = None  # read it afresh: the BMC may have restarted
            raise
        except DeviceError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            # The readers take any JSON shape; this is the net under them, so that no
            # service can turn a poll into an internal error.
            raise ProtocolError(f"unexpected answer shape ({type(exc).__name__})") from None
        finally:
            self.requests_last_poll = self._client.requests - start

    async def _poll(self) -> DeviceData:
        if self._root is None or not self._client.authenticated:
            await self._connect()
        chassis = await self._collection(self._chassis_path)
        profile = self._profile or self._pick_profile(chassis)
        self._profile = profile
        chassis = [c for c in chassis if not profile.skipped(text(c, "@odata.id"))]
        partial: list[str] = []
        results = await asyncio.gather(*(self._read_chassis(c, partial) for c in chassis))
        readings = await self._readings(results, profile, partial)
        if not readings and partial:
            raise ProtocolError(partial[0])
        root = self._root or {}
        first = chassis[0] if chassis else {}
        info = DeviceInfo(
            vendor=profile.spec.vendor or text(first, "Manufacturer") or text(root, "Vendor"),
            model=text(first, "Model") or text(root, "Product"),
            firmware=self._firmware,
            profile=profile.name,
            protocol="redfish",
        )
        return DeviceData(info=info, readings=tuple(readings), partial_errors=tuple(partial))

    async def _readings(
        self, results: Sequence[ChassisData], profile: LoadedRedfishProfile, partial: list[str]
    ) -> list[Reading]:
        """The readings of every chassis, at most MAX_READINGS; what is cut is partial."""
        per_chassis: list[tuple[str, list[Reading]]] = []
        total = 0
        for index, data in enumerate(results):
            if total >= MAX_READINGS:
                partial.append(
                    f"{len(results) - index} chassis not read: "
                    f"the poll has {MAX_READINGS} readings already"
                )
                break
            found, notes = chassis_readings(data, profile)
            partial.extend(f"chassis {shown(data.chassis_id)}: {note}" for note in notes)
            per_chassis.append((data.chassis_id, found))
            total += len(found)
            if len(results) > 1:
                # One chassis is bounded (MAX_ARRAY, MAX_MEMBERS); many are not: let other
                # targets' polls run between them.
                await asyncio.sleep(0)
        readings: list[Reading] = disambiguate(per_chassis)
        if len(readings) > MAX_READINGS:
            partial.append(f"{len(readings)} readings, only the first {MAX_READINGS} kept")
            del readings[MAX_READINGS:]
        return readings

    # -- connecting ---------------------------------------------------------------------

    async def _connect(self) -> None:
        client = self._client
        root = await client.root()
        features = child(child(root, "ProtocolFeaturesSupported"), "ExpandQuery")
        self._expand = None
        if self._options.expand and features is not None and features.get("Levels") is True:
            if features.get("NoLinks") is True:
                self._expand = "$expand=.($levels=1)"
            elif features.get("ExpandAll") is True:
                self._expand = "$expand=*($levels=1)"
        sessions = link(child(root, "Links"), "Sessions")
        if not sessions and link(root, "SessionService"):
            sessions = link(root, "SessionService").rstrip("/") + "/Sessions"
        if not client.authenticated:
            await client.login(client.resolve(sessions) if sessions else "")
        chassis = link(root, "Chassis")
        if not chassis:
            raise UnsupportedError("the service root lists no Chassis collection")
        self._chassis_path = client.resolve(chassis)
        self._firmware = await self._manager_firmware(root)
        self._root = root

    async def _manager_firmware(self, root: JsonObject) -> str:
        """The first manager's FirmwareVersion (the BMC's), or "" if it cannot be read."""
        managers = link(root, "Managers")
        if not managers:
            return ""
        try:
            members = await self._collection(self._client.resolve(managers))
        except (ProtocolError, UnsupportedError):
            return ""
        for manager in members:
            version = text(manager, "FirmwareVersion")
            if version:
                return version
        return ""

    def _pick_profile(self, chassis: Sequence[JsonObject]) -> LoadedRedfishProfile:
        if self._spec.profile is not None:
            try:
                return self._context.profiles.typed(self._spec.profile, LoadedRedfishProfile)
            except KeyError:
                raise UnsupportedError(
                    f"profile {self._spec.profile!r} is not a Redfish profile"
                ) from None
        root = self._root or {}
        manufacturers = [text(c, "Manufacturer") for c in chassis] + [text(root, "Vendor")]
        models = [text(c, "Model") for c in chassis] + [text(root, "Product")]
        found = match_redfish(
            self._context.profiles.of_type(LoadedRedfishProfile),
            [m for m in manufacturers if m],
            [m for m in models if m],
        )
        if found is None:
            raise UnsupportedError("no Redfish profile matches (and no fallback profile)")
        return found

    # -- reading ------------------------------------------------------------------------

    def _skipped(self, path: str) -> bool:
        return self._profile is not None and self._profile.skipped(path)

    async def _get(self, path: str) -> JsonObject:
        """A resource that must be there."""
        status, body = await self._client.get(path)
        if body is None:
            raise ProtocolError(f"{shown(path)}: HTTP {status}")
        return body

    async def _members(self, paths: Sequence[str]) -> list[JsonObject]:
        """Members by path, concurrently (the client caps requests in flight); one that is
        gone (404) is left out."""

        async def one(path: str) -> JsonObject | None:
            _, body = await self._client.get(path)
            return body

        found = await asyncio.gather(*(one(p) for p in paths))
        return [f for f in found if f is not None]

    async def _pages(self, collection: JsonObject, path: str) -> list[object]:
        """The Members of a collection, following Members@odata.nextLink (services page
        long collections) up to MAX_PAGES requests and MAX_MEMBERS members; a next link
        already read is a loop, a protocol error."""
        members = collection.get("Members", [])
        if not isinstance(members, list):
            raise ProtocolError(f"{shown(path)}: Members is not an array")
        seen = {path}
        next_link = collection.get("Members@odata.nextLink")
        while next_link is not None and len(members) <= MAX_MEMBERS:
            page_path = self._client.resolve(next_link)
            if page_path in seen:
                raise ProtocolError(
                    f"{shown(path)}: Members@odata.nextLink loops back to {shown(page_path)}"
                )
            if len(seen) >= MAX_PAGES:
                raise ProtocolError(f"{shown(path)}: more than {MAX_PAGES} pages of members")
            seen.add(page_path)
            page = await self._get(page_path)
            more = page.get("Members", [])
            if not isinstance(more, list):
                raise ProtocolError(f"{shown(page_path)}: Members is not an array")
            members = members + more
            next_link = page.get("Members@odata.nextLink")
        if len(members) > MAX_MEMBERS:
            raise ProtocolError(f"{shown(path)}: {len(members)} members (more than {MAX_MEMBERS})")
        return members

    def _member_paths(self, members: Sequence[object]) -> list[str]:
        paths = []
        for member in members:
            if isinstance(member, dict) and "@odata.id" in member:
                found = self._client.resolve(member["@odata.id"])
                if not self._skipped(found) and found not in paths:
                    paths.append(found)
        return paths

    async def _collection(self, path: str) -> list[JsonObject]:
        """The members of a collection: expanded in one request when possible."""
        if self._expand is not None:
            status, body = await self._client.get(f"{path}?{self._expand}")
            if body is not None:
                members = await self._pages(body, path)
                if all(isinstance(m, dict) and len(m) > 1 for m in members):
                    return [
                        m
                        for m in members
                        if isinstance(m, dict) and not self._skipped(text(m, "@odata.id"))
                    ]
                # Members came back as bare links: the service ignored $expand.
                return await self._members(self._member_paths(members))
            if status in EXPAND_REFUSED:
                self._expand = None  # announced but not there: plain requests from now on
            else:
                raise ProtocolError(f"{shown(path)}: HTTP {status}")
        members = await self._pages(await self._get(path), path)
        return await self._members(self._member_paths(members))

    async def _sensors(self, path: str) -> list[JsonObject]:
        """A Sensors collection; without $expand, only known useful members between
        full reads."""
        known = self._sensor_paths.get(path)
        read_at = self._sensors_at.get(path)
        fresh = read_at is not None and time.monotonic() - read_at < SENSOR_REFRESH
        if self._expand is None and known is not None and fresh:
            return await self._members(known)
        sensors = await self._collection(path)
        self._sensor_paths[path] = tuple(
            self._client.resolve(text(s, "@odata.id"))
            for s in sensors
            if sensor_quantity(s) is not None and text(s, "@odata.id")
        )
        self._sensors_at[path] = time.monotonic()
        return sensors

    async def _supply_metrics(self, supplies: Sequence[JsonObject]) -> dict[str, JsonObject]:
        """Each present power supply's PowerSupplyMetrics (input voltage, input and output
        watts), by the supply's @odata.id; one that is gone (404) is left out."""
        wanted: dict[str, str] = {}
        for supply in supplies:
            metrics = link(supply, "Metrics")
            if metrics and present(supply) and text(supply, "@odata.id"):
                path = self._client.resolve(metrics)
                if not self._skipped(path):
                    wanted[text(supply, "@odata.id")] = path
        found = await asyncio.gather(*(self._client.get(p) for p in wanted.values()))
        return {key: body for key, (_, body) in zip(wanted, found, strict=True) if body is not None}

    async def _part(
        self, what: str, partial: list[str], read: Callable[[], Awaitable[None]]
    ) -> None:
        """Read one part of a chassis; a part that fails is a partial error, not the poll's
        (credentials and reachability fail the whole poll)."""
        try:
            await read()
        except (ProtocolError, DeviceTimeoutError, UnsupportedError) as exc:
            partial.append(f"{what}: {exc}")

    async def _read_chassis(self, chassis: JsonObject, partial: list[str]) -> ChassisData:
        chassis_id = text(chassis, "Id") or text(chassis, "@odata.id").rpartition("/")[2]
        data = ChassisData(chassis_id=chassis_id or "chassis")
        client = self._client
        thermal_subsystem = link(chassis, "ThermalSubsystem")
        power_subsystem = link(chassis, "PowerSubsystem")

        async def thermal() -> None:
            if thermal_subsystem:
                subsystem = await self._get(client.resolve(thermal_subsystem))
                metrics = link(subsystem, "ThermalMetrics")
                if metrics and not self._skipped(client.resolve(metrics)):
                    data.thermal_metrics = await self._get(client.resolve(metrics))
                fans = link(subsystem, "Fans")
                if fans:
                    data.fans = await self._collection(client.resolve(fans))
                leaks = link(subsystem, "LeakDetection")
                if leaks:
                    detection = await self._get(client.resolve(leaks))
                    detectors = link(detection, "LeakDetectors")
                    if detectors:
                        data.leak_detectors = await self._collection(client.resolve(detectors))
            elif link(chassis, "Thermal"):
                data.thermal = await self._get(client.resolve(link(chassis, "Thermal")))

        async def power() -> None:
            if power_subsystem:
                subsystem = await self._get(client.resolve(power_subsystem))
                supplies = link(subsystem, "PowerSupplies")
                if supplies:
                    data.power_supplies = await self._collection(client.resolve(supplies))
                    data.supply_metrics = await self._supply_metrics(data.power_supplies)
            elif link(chassis, "Power"):
                data.power = await self._get(client.resolve(link(chassis, "Power")))

        async def sensors() -> None:
            if link(chassis, "Sensors"):
                data.sensors = await self._sensors(client.resolve(link(chassis, "Sensors")))

        await asyncio.gather(
            self._part(f"chassis {shown(chassis_id)} thermal", partial, thermal),
            self._part(f"chassis {shown(chassis_id)} power", partial, power),
            self._part(f"chassis {shown(chassis_id)} sensors", partial, sensors),
        )
        return data

    async def close(self) -> None:
        """Log out (DELETE the session) and close the connections."""
        await self._client.close()
