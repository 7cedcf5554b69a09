"""The simulated server room: nine devices (15 targets with Redfish) on loopback, a scenario
clock, and its config.

The room is the one that motivated hwpoller: six servers in two racks (three Dell and three
Supermicro BMCs), one APC UPS, one Liebert CRAC and one NetBotz environmental monitor with
a leak rope under rack A. Every device listens on its own UDP port; `config()` is the
hwpoller configuration that polls them all.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from poller.simulator.ipmi_bmc import USERS, start_bmc
from poller.simulator.model import RoomModel, Server
from poller.simulator.notify import Notifier
from poller.simulator.redfish_bmc import USERS as REDFISH_USERS
from poller.simulator.redfish_bmc import bind_tcp, start_redfish_bmc
from poller.simulator.scenarios import SCENARIOS
from poller.simulator.snmp_agent import LiveMib, SnmpAgent, bind_udp
from poller.simulator.snmp_devices import RENDERERS, UPTIME_BASE
from poller.simulator.snmpsim import free_udp_port

log = logging.getLogger("hwpoller.simulator")

SITE, ROOM = "city-hall", "server-room"
COMMUNITY = "hwsim-public"
BMC_USER = "monitor"
TICK = 0.2  # wall seconds between model updates


def servers() -> list[Server]:
    """The six servers: rack A (Dell) and rack B (Supermicro), hotter towards the top."""
    return [
        Server("web-1", "A", "dell", inlet_offset=0.4, load=0.35, fan_count=6),
        Server("web-2", "A", "dell", inlet_offset=0.8, load=0.45, fan_count=6),
        Server("db-1", "A", "dell", inlet_offset=1.2, load=0.60, fan_count=6),
        Server("app-1", "B", "supermicro", inlet_offset=0.9, load=0.50),
        Server("app-2", "B", "supermicro", inlet_offset=1.4, load=0.50),
        Server("backup-1", "B", "supermicro", inlet_offset=2.0, load=0.25),
    ]


def _destination(address: str) -> tuple[str, int]:
    """host:port of the notification receiver; port 0 (or none) means "pick a free one"."""
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"notification address {address!r} is not host:port")
    return host, int(port)


@dataclass(frozen=True)
class Device:
    """One simulated device as the config sees it."""

    name: str
    protocol: str  # snmp or ipmi
    kind: str  # bmc, ups, envmon, crac
    rack: str | None
    host: str
    port: int

    @property
    def labels(self) -> dict[str, str]:
        """The target's static labels."""
        labels = {"site": SITE, "room": ROOM}
        if self.rack is not None:
            labels["rack"] = self.rack
        return labels


# SNMP devices: (target name, renderer kind, rack or None for room-level equipment).
SNMP_DEVICES = (("ups-1", "ups", "B"), ("crac-1", "crac", None), ("envmon-1", "envmon", "A"))
# Sensors that sit under another rack than their device, as the config's `sensor_labels`
# says so (target name -> rules): the NetBotz in rack A has its spot leak sensor, "Spot Leak
# (Rack B Under Floor)" (snmp_devices.render_envmon), under rack B, so the sensor's series
# carry rack="B" and the status page draws it there.
SENSOR_LABELS: dict[str, list[dict[str, Any]]] = {
    "envmon-1": [{"match": r"\(Rack B\b", "labels": {"rack": "B"}}],
}


class SimulatedRoom:
    """The devices, the model and the scenario clock, on the running asyncio loop."""

    def __init__(
        self,
        scenario: str = "quiet",
        speed: float = 1.0,
        host: str = "127.0.0.1",
        base_port: int = 0,
        seed: int = 1,
        notify: str | None = "127.0.0.1:0",
        redfish: bool = False,
    ) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.scenario = SCENARIOS[scenario]
        self.speed = speed
        self.host = host
        self.base_port = base_port
        self.model = RoomModel(servers(), list(self.scenario.events), seed)
        # Where the SNMP devices send their traps (hwpoller's notification receiver); port 0:
        # a free port on that host, chosen at start. None: the devices send none.
        self._notify = _destination(notify) if notify else None
        self.notifier = Notifier(self.model, COMMUNITY, None)
        self.devices: list[Device] = []
        self._agents: list[SnmpAgent] = []
        self._transports: list[asyncio.DatagramTransport] = []
        self._ticker: asyncio.Task[None] | None = None
        # Each server's BMC also serves Redfish (HTTP on its own TCP port) when asked.
        self.redfish = redfish
        self._runners: list[Any] = []
        self._started: float | None = None  # monotonic time of start(); None before

    @property
    def now(self) -> float:
        """Scenario time in seconds."""
        if self._started is None:
            return 0.0
        return (time.monotonic() - self._started) * self.speed

    def _sockets(self, count: int) -> list[socket.socket]:
        socks: list[socket.socket] = []
        try:
            for i in range(count):
                socks.append(bind_udp(self.host, self.base_port + i if self.base_port else 0))
        except OSError as exc:
            for sock in socks:
                sock.close()
            raise OSError(f"cannot listen on {self.host} port {self.base_port + len(socks)}: "
                          f"{exc.strerror}") from None  # fmt: skip
        return socks

    async def start(self) -> None:
        """Bind every device's port and start answering."""
        socks = self._sockets(len(self.model.servers) + len(SNMP_DEVICES))
        if self._notify is not None:
            host, port = self._notify
            self.notifier.destination = (host, port or free_udp_port(host))
        for sock, (name, kind, rack) in zip(socks, SNMP_DEVICES, strict=False):
            render = functools.partial(RENDERERS[kind], self.model, name)
            agent = SnmpAgent(sock, COMMUNITY, LiveMib(render, lambda: self.model.now))
            agent.start()
            self.notifier.watch(name, kind, agent.sock)
            self._agents.append(agent)
            self.devices.append(Device(name, "snmp", kind, rack, self.host, agent.port))
        for sock, server in zip(
            socks[len(SNMP_DEVICES) :], self.model.servers.values(), strict=True
        ):
            port = sock.getsockname()[1]
            _, transport = await start_bmc(self.model, server, sock)
            self._transports.append(transport)
            self.devices.append(
                Device(f"{server.name}-bmc", "ipmi", "bmc", server.rack, self.host, port)
            )
        if self.redfish:
            await self._start_redfish()
        self._started = time.monotonic()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        log.info(
            "simulated room up: scenario %s (%s), speed x%g",
            self.scenario.name,
            self.scenario.summary,
            self.speed,
        )

    async def _start_redfish(self) -> None:
        for server in self.model.servers.values():
            sock = bind_tcp(self.host)
            port = sock.getsockname()[1]
            _, runner = await start_redfish_bmc(self.model, server, sock)
            self._runners.append(runner)
            self.devices.append(
                Device(f"{server.name}-redfish", "redfish", "bmc", server.rack, self.host, port)
            )

    async def _tick(self) -> None:
        while True:
            fired = len(self.model.log)
            self.model.advance(self.now)
            for at, what in self.model.log[fired:]:
                log.info("scenario %s at %.0fs: %s", self.scenario.name, at, what)
            self.notifier.check(UPTIME_BASE + self.model.now)
            await asyncio.sleep(TICK)

    async def stop(self) -> None:
        """Stop every device and the clock."""
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        for agent in self._agents:
            agent.stop()
        for transport in self._transports:
            transport.close()
        for runner in self._runners:
            await runner.cleanup()
        self._agents, self._transports, self._runners = [], [], []

    def config(
        self, interval: str = "10s", listen: str = "127.0.0.1:9730", advertise: str | None = None
    ) -> dict[str, Any]:
        """The hwpoller configuration that polls every simulated device; `advertise` is the
        host name to write when the poller reaches the devices by another name (compose)."""
        password, _ = USERS[BMC_USER]
        targets = []
        for device in self.devices:
            host = advertise or device.host
            host = f"[{host}]" if ":" in host else host
            target: dict[str, Any] = {
                "name": device.name,
                "address": f"{host}:{device.port}",
                "protocol": device.protocol,
                "auth": "simulated-bmc" if device.protocol == "ipmi" else "simulated-snmp",
                "labels": device.labels,
            }
            if device.name in SENSOR_LABELS:
                target["sensor_labels"] = SENSOR_LABELS[device.name]
            if device.protocol == "redfish":  # plain HTTP on loopback: nothing to verify
                target.update(address=f"http://{host}:{device.port}", auth="simulated-redfish")
            targets.append(target)
        settings: dict[str, Any] = {"listen_address": listen, "interval": interval}
        destination = self.notifier.destination
        if destination is not None:
            # With `advertise` the poller runs elsewhere (compose) and listens on every
            # interface; the devices send to `notify` by that host's name.
            host = "0.0.0.0" if advertise else destination[0]
            host = f"[{host}]" if ":" in host else host
            settings["notification_address"] = f"{host}:{destination[1]}"
        else:
            settings["notification_address"] = None
        auths: dict[str, Any] = {}
        if self.redfish:
            user, redfish_password = next(iter(REDFISH_USERS.items()))
            auths["simulated-redfish"] = {
                "protocol": "redfish",
                "username": user,
                "password": redfish_password,
            }
        return {
            "settings": settings,
            "auths": {
                **auths,
                "simulated-snmp": {"protocol": "snmp", "version": "2c", "community": COMMUNITY},
                "simulated-bmc": {
                    "protocol": "ipmi",
                    "username": BMC_USER,
                    "password": password,
                    "privilege": "user",
                },
            },
            "targets": targets,
        }

    def write_config(self, path: str | Path, **kwargs: Any) -> None:
        """Write config() as YAML, readable by `hwpoller run --config.file`."""
        header = (
            f"# hwpoller config for the simulated room (scenario {self.scenario.name}), "
            "written by `hwpoller simulate`.\n"
        )
        text = yaml.safe_dump(self.config(**kwargs), sort_keys=False)
        Path(path).write_text(header + text, encoding="utf-8")


class RoomThread:
    """A SimulatedRoom on its own event loop in a background thread (tests, tools)."""

    def __init__(self, **kwargs: Any) -> None:
        self.room = SimulatedRoom(**kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> SimulatedRoom:
        """Start the loop thread and the room; returns the room."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.room.start(), self._loop).result(30)
        return self.room

    def stop(self) -> None:
        """Stop the room and the loop thread."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.room.stop(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> SimulatedRoom:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
