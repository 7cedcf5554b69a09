"""A simulated server BMC's Redfish service (aiohttp.web), rendering the room model live.

Each server's service has what a 2021+ BMC shows: a service root announcing $expand, a
SessionService (POST Sessions -> X-Auth-Token, DELETE to log out) and basic auth, one
Chassis with ThermalSubsystem (ThermalMetrics, Fans, LeakDetection on rack A, whose leak
rope is the room's), PowerSubsystem (two supplies), Sensors with thresholds, and a
Manager with the firmware version. Dell servers name sensors as iDRAC does ("System Board
Inlet Temp", PhysicalContext SystemBoard); Supermicro ones leave PhysicalContext out, so
both vendor profiles' rules are exercised. Values are read from the model per request.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from poller.simulator.model import RoomModel, Server

# username -> password of the simulated service accounts.
USERS = {"monitor": "sim-redfish-pw"}
ROOT = "/redfish/v1"
MAKES = {
    # make: (Manufacturer, Model, firmware, root Product)
    "dell": (
        "Dell Inc.",
        "PowerEdge R650",
        "7.00.00.171",
        "Integrated Dell Remote Access Controller",
    ),
    "supermicro": ("Supermicro", "SYS-120U-TNR", "01.01.06", "SYS-120U-TNR"),
}
Json = dict[str, object]


def _ref(path: str) -> Json:
    return {"@odata.id": f"{ROOT}/{path}"}


def _collection(path: str, members: list[str]) -> Json:
    return {
        "@odata.id": f"{ROOT}/{path}",
        "Name": path.rpartition("/")[2],
        "Members@odata.count": len(members),
        "Members": [_ref(f"{path}/{m}") for m in members],
    }


def _status(health: str = "OK", state: str = "Enabled") -> Json:
    return {"State": state, "Health": health}


@dataclass
class RedfishBmc:
    """One server's Redfish service; `sessions`/`basic` switch the login methods offered."""

    room: RoomModel
    server: Server
    sessions: bool = True
    basic: bool = True
    users: Mapping[str, str] = field(default_factory=lambda: dict(USERS))
    tokens: dict[str, str] = field(default_factory=dict)  # session id -> token
    logins: int = 0
    requests: int = 0

    # -- identity -----------------------------------------------------------------------

    @property
    def make(self) -> tuple[str, str, str, str]:
        """Manufacturer, Model, firmware and root Product of this make."""
        return MAKES.get(self.server.vendor, MAKES["supermicro"])

    def _sensor_name(self, what: str) -> str:
        return f"System Board {what}" if self.server.vendor == "dell" else what

    def _context(self, context: str) -> object:
        # iDRAC says SystemBoard for its board sensors; Supermicro says nothing.
        return "SystemBoard" if self.server.vendor == "dell" else None

    # -- resources ----------------------------------------------------------------------

    def _temperatures(self) -> dict[str, tuple[str, float, str, float, float]]:
        """Sensor id -> (name, value, context, upper caution, upper critical)."""
        s = self.server
        out = {
            "InletTemp": (self._sensor_name("Inlet Temp"), s.inlet, "Intake", 38.0, 42.0),
            "ExhaustTemp": (self._sensor_name("Exhaust Temp"), s.exhaust, "Exhaust", 70.0, 75.0),
        }
        for i, cpu in enumerate(s.cpus, start=1):
            out[f"CPU{i}Temp"] = (f"CPU{i} Temp", cpu, "CPU", 85.0, 95.0)
        return out

    def _fan_health(self, index: int) -> str:
        return "Critical" if index in self.server.failed_fans else "OK"

    def resource(self, path: str) -> Json | None:
        """The JSON of one resource (path below /redfish/v1), or None."""
        s = self.server
        manufacturer, model, firmware, product = self.make
        if path == "":
            root: Json = {
                "@odata.id": f"{ROOT}/",
                "Id": "RootService",
                "RedfishVersion": "1.15.0",
                "Vendor": manufacturer.split()[0],
                "Product": product,
                "ProtocolFeaturesSupported": {
                    "ExpandQuery": {
                        "ExpandAll": True,
                        "Levels": True,
                        "NoLinks": True,
                        "Links": True,
                        "MaxLevels": 1,
                    }
                },
                "Chassis": _ref("Chassis"),
                "Managers": _ref("Managers"),
            }
            if self.sessions:
                root["SessionService"] = _ref("SessionService")
                root["Links"] = {"Sessions": _ref("SessionService/Sessions")}
            return root
        if path == "SessionService" and self.sessions:
            return {
                "@odata.id": f"{ROOT}/SessionService",
                "Sessions": _ref("SessionService/Sessions"),
            }
        if path == "SessionService/Sessions" and self.sessions:
            return _collection(path, list(self.tokens))
        if path == "Managers":
            return _collection(path, ["1"])
        if path == "Managers/1":
            return {"@odata.id": f"{ROOT}/Managers/1", "Id": "1", "FirmwareVersion": firmware}
        if path == "Chassis":
            return _collection(path, ["1"])
        base = "Chassis/1"
        if path == base:
            return {
                "@odata.id": f"{ROOT}/{base}",
                "Id": "1",
                "Name": s.name,
                "Manufacturer": manufacturer,
                "Model": model,
                "Status": _status(),
                "ThermalSubsystem": _ref(f"{base}/ThermalSubsystem"),
                "PowerSubsystem": _ref(f"{base}/PowerSubsystem"),
                "Sensors": _ref(f"{base}/Sensors"),
            }
        return self._chassis_part(base, path.removeprefix(base + "/"))

    def _chassis_part(self, base: str, part: str) -> Json | None:
        s = self.server
        temps = self._temperatures()
        fans = [f"Fan{i}" for i in range(1, len(s.fans) + 1)]
        leaks = s.rack == "A"
        if part == "ThermalSubsystem":
            out: Json = {
                "@odata.id": f"{ROOT}/{base}/ThermalSubsystem",
                "ThermalMetrics": _ref(f"{base}/ThermalSubsystem/ThermalMetrics"),
                "Fans": _ref(f"{base}/ThermalSubsystem/Fans"),
                "Status": _status(),
            }
            if leaks:
                out["LeakDetection"] = _ref(f"{base}/ThermalSubsystem/LeakDetection")
            return out
        if part == "ThermalSubsystem/ThermalMetrics":
            return {
                "@odata.id": f"{ROOT}/{base}/{part}",
                "TemperatureReadingsCelsius": [
                    {
                        "DeviceName": name,
                        "Reading": round(value, 1),
                        "DataSourceUri": f"{ROOT}/{base}/Sensors/{sid}",
                    }
                    for sid, (name, value, _, _, _) in temps.items()
                    if sid in ("InletTemp", "ExhaustTemp")
                ],
            }
        if part == "ThermalSubsystem/Fans":
            return _collection(f"{base}/{part}", fans)
        match = re.fullmatch(r"ThermalSubsystem/Fans/Fan(\d+)", part)
        if match and 1 <= int(match.group(1)) <= len(s.fans):
            i = int(match.group(1)) - 1
            return {
                "@odata.id": f"{ROOT}/{base}/{part}",
                "Id": f"Fan{i + 1}",
                "Name": f"Fan {i + 1}",
                "Status": _status(self._fan_health(i)),
                "SpeedPercent": {
                    "SpeedRPM": round(s.fans[i]),
                    "DataSourceUri": f"{ROOT}/{base}/Sensors/Fan{i + 1}",
                },
            }
        if leaks and part == "ThermalSubsystem/LeakDetection":
            return {
                "@odata.id": f"{ROOT}/{base}/{part}",
                "LeakDetectors": _ref(f"{base}/{part}/LeakDetectors"),
            }
        if leaks and part == "ThermalSubsystem/LeakDetection/LeakDetectors":
            return _collection(f"{base}/{part}", ["ChassisFloor"])
        if leaks and part == "ThermalSubsystem/LeakDetection/LeakDetectors/ChassisFloor":
            wet = self.room.leak_rope_wet
            return {
                "@odata.id": f"{ROOT}/{base}/{part}",
                "Id": "ChassisFloor",
                "Name": "Chassis floor leak detector",
                "LeakDetectorType": "Moisture",
                "PhysicalContext": "Chassis",
                "DetectorState": "Critical" if wet else "OK",
                "Status": _status("Critical" if wet else "OK"),
            }
        if part == "PowerSubsystem":
            return {
                "@odata.id": f"{ROOT}/{base}/{part}",
                "PowerSupplies": _ref(f"{base}/{part}/PowerSupplies"),
            }
        if part == "PowerSubsystem/PowerSupplies":
            return _collection(f"{base}/{part}", [f"PSU{i}" for i in range(1, len(s.psu_ok) + 1)])
        match = re.fullmatch(r"PowerSubsystem/PowerSupplies/PSU(\d+)", part)
        if match and 1 <= int(match.group(1)) <= len(s.psu_ok):
            i = int(match.group(1)) - 1
            return {
                "@odata.id": f"{ROOT}/{base}/{part}",
                "Id": f"PSU{i + 1}",
                "Status": _status("OK" if s.psu_ok[i] else "Critical"),
            }
        if part == "Sensors":
            return _collection(f"{base}/{part}", [*temps, *fans])
        match = re.fullmatch(r"Sensors/(\w+)", part)
        if match and match.group(1) in temps:
            name, value, context, caution, critical = temps[match.group(1)]
            sensor: Json = {
                "@odata.id": f"{ROOT}/{base}/{part}",
                "Id": match.group(1),
                "Name": name,
                "ReadingType": "Temperature",
                "ReadingUnits": "Cel",
                "Reading": round(value, 1),
                "Status": _status("Critical" if value >= critical else "OK"),
                "Thresholds": {
                    "UpperCaution": {"Reading": caution},
                    "UpperCritical": {"Reading": critical},
                },
            }
            shown = context if context == "CPU" else self._context(context)
            if shown is not None:
                sensor["PhysicalContext"] = shown
            return sensor
        if match and match.group(1) in fans:
            i = fans.index(match.group(1))
            return {
                "@odata.id": f"{ROOT}/{base}/{part}",
                "Id": fans[i],
                "Name": f"Fan {i + 1}",
                "ReadingType": "Rotational",
                "ReadingUnits": "RPM",
                "Reading": round(s.fans[i]),
                "Status": _status(self._fan_health(i)),
                "Thresholds": {"LowerCritical": {"Reading": 600}},
            }
        return None

    # -- HTTP ---------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        token = request.headers.get("X-Auth-Token")
        if token is not None:
            return token in self.tokens.values()
        header = request.headers.get("Authorization", "")
        if self.basic and header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return self.users.get(user) == password
        return False

    def _expanded(self, body: Json) -> Json:
        members = body.get("Members")
        if not isinstance(members, list):
            return body
        full = []
        for member in members:
            path = str(member["@odata.id"]).removeprefix(ROOT + "/")
            full.append(self.resource(path) or member)
        return {**body, "Members": full}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Every request: sessions, authorisation, resources, $expand."""
        self.requests += 1
        path = request.path.rstrip("/")
        if not path.startswith(ROOT):
            return web.json_response({"error": "not found"}, status=404)
        path = path.removeprefix(ROOT).lstrip("/")
        if request.method == "POST" and path == "SessionService/Sessions" and self.sessions:
            return await self._login(request)
        if path != "" and not self._authorised(request):
            return web.json_response({"error": "unauthorised"}, status=401)
        if request.method == "DELETE":
            match = re.fullmatch(r"SessionService/Sessions/(\w+)", path)
            if match and self.tokens.pop(match.group(1), None) is not None:
                return web.Response(status=204)
            return web.json_response({"error": "not found"}, status=404)
        if request.method != "GET":
            return web.json_response({"error": "method not allowed"}, status=405)
        body = self.resource(path)
        if body is None:
            return web.json_response({"error": "not found"}, status=404)
        if request.query.get("$expand", "").startswith((".", "*")):
            body = self._expanded(body)
        return web.json_response(body)

    async def _login(self, request: web.Request) -> web.StreamResponse:
        self.logins += 1
        try:
            creds = json.loads(await request.read())
        except ValueError:
            return web.json_response({"error": "bad request"}, status=400)
        user = creds.get("UserName") if isinstance(creds, dict) else None
        if not isinstance(user, str) or self.users.get(user) != creds.get("Password"):
            return web.json_response({"error": "unauthorised"}, status=401)
        session_id = secrets.token_hex(8)
        token = secrets.token_urlsafe(24)
        self.tokens[session_id] = token
        location = f"{ROOT}/SessionService/Sessions/{session_id}"
        return web.json_response(
            {"@odata.id": location, "Id": session_id, "UserName": user},
            status=201,
            headers={"X-Auth-Token": token, "Location": location},
        )


def bind_tcp(host: str, port: int = 0) -> socket.socket:
    """A listening TCP socket (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    return sock


async def serve(handler: Callable[[web.Request], object], sock: socket.socket) -> web.AppRunner:
    """Serve an aiohttp handler on an already bound socket; returns the runner to clean up."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner


async def start_redfish_bmc(
    room: RoomModel, server: Server, sock: socket.socket, sessions: bool = True, basic: bool = True
) -> tuple[RedfishBmc, web.AppRunner]:
    """Serve one server's Redfish service on a bound TCP socket."""
    bmc = RedfishBmc(room, server, sessions=sessions, basic=basic)
    return bmc, await serve(bmc.handle, sock)
