"""The physical model of the simulated server room: air, water, power, servers. Pure: no I/O.

Everything is in scenario seconds. `RoomModel.advance(t)` integrates the model up to `t` in
small steps, firing scenario events on the way, so the devices (which only read the model)
see a consistent room however fast the clock runs. First-order lags use the exact
exponential step, which stays stable at any step size.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

# Room air when the CRAC cools: cold aisle, CRAC supply and its hot return.
ROOM_SETPOINT = 21.0
SUPPLY_SETPOINT = 16.0
# Without cooling the servers' heat warms the room by about 1 C a minute (six 1U servers in a
# small, closed room), until it approaches what the walls let out.
WARMING_RATE = 1.0 / 60.0
ROOM_MAX = 45.0
HUMIDITY_NORMAL = 0.45
HUMIDITY_WET = 0.85
# A full battery carries the UPS's rated load share (BATTERY_REF_LOAD) this long.
BATTERY_RUNTIME_AT_REF = 1800.0
BATTERY_REF_LOAD = 0.4
RECHARGE_TIME = 3600.0
FAN_MIN_RPM, FAN_MAX_RPM = 4200.0, 14000.0
MAX_STEP = 2.0


def relax(value: float, target: float, dt: float, tau: float) -> float:
    """One exact step of a first-order lag towards target with time constant tau."""
    return target + (value - target) * math.exp(-dt / tau)


@dataclass
class Server:
    """One server as its BMC sees it: temperatures, fans, power supplies."""

    name: str
    rack: str
    vendor: str  # "dell" or "supermicro": decides sensor names and manufacturer id
    inlet_offset: float  # above the room's cold-aisle temperature (rack position, airflow)
    load: float  # 0..1, drives exhaust and CPU temperatures
    fan_count: int = 4
    inlet: float = ROOM_SETPOINT
    exhaust: float = ROOM_SETPOINT + 12.0
    cpus: list[float] = field(default_factory=lambda: [45.0, 45.0])
    fans: list[float] = field(default_factory=list)
    failed_fans: set[int] = field(default_factory=set)  # 0-based fan indexes
    psu_ok: list[bool] = field(default_factory=lambda: [True, True])

    def __post_init__(self) -> None:
        if not self.fans:
            self.fans = [self.fan_target()] * self.fan_count

    def fan_target(self) -> float:
        """The RPM the BMC's fan control asks for at the current inlet temperature."""
        rpm = FAN_MIN_RPM + 450.0 * max(0.0, self.inlet - 22.0) + 1500.0 * self.load
        return min(FAN_MAX_RPM, rpm)


@dataclass
class Ups:
    """A UPS feeding both racks."""

    mains: bool = True
    charge: float = 1.0  # 0..1
    load: float = 0.38  # output load 0..1
    seconds_on_battery: float = 0.0
    battery_temp: float = 25.0
    rating_watts: float = 4500.0

    @property
    def runtime(self) -> float:
        """Seconds the battery lasts at the present load."""
        return BATTERY_RUNTIME_AT_REF * self.charge * BATTERY_REF_LOAD / max(self.load, 0.05)

    @property
    def battery_voltage(self) -> float:
        """DC battery voltage of a 96 V string, sagging while it discharges."""
        base = 109.0 if self.mains else 104.0
        return base - (1.0 - self.charge) * 14.0


@dataclass
class Crac:
    """The precision cooling unit: compressor, supply and return air, active conditions."""

    compressor_ok: bool = True
    supply: float = SUPPLY_SETPOINT
    return_air: float = ROOM_SETPOINT + 6.0
    humidity: float = HUMIDITY_NORMAL
    floor_wet: bool = False  # its own under-floor water sensor
    failed_at: float | None = None  # scenario time of the compressor failure

    def running(self, mains: bool) -> bool:
        """The unit is powered (it is not on the UPS: it stops when the mains goes)."""
        return mains

    def cooling(self, mains: bool) -> bool:
        """Whether the unit removes heat at all."""
        return mains and self.compressor_ok


Event = Callable[["RoomModel"], None]


@dataclass(frozen=True)
class TimedEvent:
    """A scenario step: at `at` scenario seconds, `apply` changes the room."""

    at: float
    description: str
    apply: Event


class RoomModel:
    """The whole room; devices read it, scenario events change it."""

    def __init__(self, servers: list[Server], events: list[TimedEvent], seed: int = 1) -> None:
        self.servers = {s.name: s for s in servers}
        self.ups = Ups()
        self.crac = Crac()
        self.room = ROOM_SETPOINT
        self.humidity = HUMIDITY_NORMAL
        self.leak_rope_wet = False
        self.door_open = False
        self.now = 0.0
        self.log: list[tuple[float, str]] = []  # (time, description) of fired events
        self._events = sorted(events, key=lambda e: e.at)
        self._rng = random.Random(seed)

    def noise(self, sigma: float) -> float:
        """A small Gaussian disturbance, the way real sensors never read the same twice."""
        return self._rng.gauss(0.0, sigma)

    def advance(self, t: float) -> None:
        """Integrate the model up to scenario time t, firing due events on the way."""
        while True:
            while self._events and self._events[0].at <= self.now:
                event = self._events.pop(0)
                event.apply(self)
                self.log.append((self.now, event.description))
            if self.now >= t:
                return
            due = self._events[0].at if self._events else math.inf
            end = min(self.now + MAX_STEP, t, due)
            self._step(end - self.now)
            self.now = end

    def _step(self, dt: float) -> None:
        ups, crac = self.ups, self.crac
        cooling = crac.cooling(ups.mains)
        if cooling:
            crac.supply = relax(crac.supply, SUPPLY_SETPOINT, dt, 90.0)
            self.room = relax(self.room, ROOM_SETPOINT, dt, 240.0)
        else:
            # The fans (if powered) still move room air through a dead coil: supply air
            # drifts up to the return temperature while the room keeps warming.
            crac.supply = relax(crac.supply, crac.return_air - 1.0, dt, 120.0)
            headroom = max(0.0, (ROOM_MAX - self.room) / (ROOM_MAX - ROOM_SETPOINT))
            self.room += WARMING_RATE * dt * min(1.0, 3.0 * headroom)
        self.room += self.noise(0.01)
        crac.return_air = relax(crac.return_air, self.room + 6.0, dt, 60.0)
        wet = self.leak_rope_wet
        self.humidity = relax(self.humidity, HUMIDITY_WET if wet else HUMIDITY_NORMAL, dt, 900.0)
        self.humidity = min(0.99, max(0.05, self.humidity + self.noise(0.0005)))
        crac.humidity = relax(crac.humidity, self.humidity, dt, 60.0)
        for server in self.servers.values():
            self._step_server(server, dt)
        self._step_ups(dt)

    def _step_server(self, server: Server, dt: float) -> None:
        server.inlet = self.room + server.inlet_offset + self.noise(0.05)
        server.exhaust = relax(
            server.exhaust, server.inlet + 9.0 + 10.0 * server.load, dt, 30.0
        ) + self.noise(0.05)
        for i in range(len(server.cpus)):
            target = server.inlet + 22.0 + 28.0 * server.load + 2.0 * i
            server.cpus[i] = relax(server.cpus[i], target, dt, 20.0) + self.noise(0.2)
        target_rpm = server.fan_target()
        for i in range(len(server.fans)):
            if i in server.failed_fans:
                server.fans[i] = relax(server.fans[i], 0.0, dt, 3.0)
            else:
                rpm = target_rpm * (1.0 + 0.01 * i) + self.noise(20.0)
                server.fans[i] = relax(server.fans[i], rpm, dt, 8.0)

    def _step_ups(self, dt: float) -> None:
        ups = self.ups
        if ups.mains:
            ups.seconds_on_battery = 0.0
            ups.charge = min(1.0, ups.charge + dt / RECHARGE_TIME)
        else:
            ups.seconds_on_battery += dt
            drain = dt * ups.load / (BATTERY_RUNTIME_AT_REF * BATTERY_REF_LOAD)
            ups.charge = max(0.0, ups.charge - drain)
        ups.load = min(1.0, max(0.0, 0.38 + self.noise(0.002)))
        heat = 2.0 if not ups.mains else 0.0
        ups.battery_temp = relax(ups.battery_temp, self.room + 4.0 + heat, dt, 600.0)
