"""Named incident scenarios: scripts of events over scenario time for the simulated room.

Each scenario starts with START seconds of normal operation so that a poller (and a
dashboard) sees the room healthy before anything happens. `--speed` compresses the whole
script; the times here are in scenario seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from poller.simulator.model import RoomModel, TimedEvent

START = 120.0
# The server whose fan stops in fan-failure, and which fan (1-based, as the BMC names it).
FAN_FAILURE_SERVER = "web-2"
FAN_FAILURE_FAN = 3
# How long the mains stays away in mains-loss.
OUTAGE = 600.0
# How long the water takes to reach the CRAC's own under-floor sensor in roof-leak.
WATER_SPREAD = 300.0


@dataclass(frozen=True)
class Scenario:
    """A named script of events."""

    name: str
    summary: str
    events: tuple[TimedEvent, ...]


def _leak(room: RoomModel) -> None:
    room.leak_rope_wet = True


def _leak_spreads(room: RoomModel) -> None:
    room.crac.floor_wet = True


def _compressor_fails(room: RoomModel) -> None:
    room.crac.compressor_ok = False
    room.crac.failed_at = room.now


def _fan_stops(room: RoomModel) -> None:
    room.servers[FAN_FAILURE_SERVER].failed_fans.add(FAN_FAILURE_FAN - 1)


def _mains_lost(room: RoomModel) -> None:
    room.ups.mains = False


def _mains_back(room: RoomModel) -> None:
    room.ups.mains = True


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("quiet", "nothing happens: a healthy room", ()),
        Scenario(
            "roof-leak",
            "the leak rope under rack A trips, humidity climbs, water reaches the CRAC",
            (
                TimedEvent(START, "water drips onto the leak rope under rack A", _leak),
                TimedEvent(
                    START + WATER_SPREAD,
                    "water reaches the CRAC's under-floor sensor",
                    _leak_spreads,
                ),
            ),
        ),
        Scenario(
            "crac-failure",
            "the CRAC's compressor fails: supply air rises, inlets rise about 1 C/min",
            (
                TimedEvent(
                    START, "CRAC compressor 1 trips on high head pressure", _compressor_fails
                ),
            ),
        ),
        Scenario(
            "fan-failure",
            f"fan {FAN_FAILURE_FAN} of {FAN_FAILURE_SERVER} stops",
            (TimedEvent(START, f"{FAN_FAILURE_SERVER} fan {FAN_FAILURE_FAN} stops", _fan_stops),),
        ),
        Scenario(
            "mains-loss",
            f"mains fails; the UPS runs on battery for {OUTAGE / 60:.0f} min, then mains returns",
            (
                TimedEvent(START, "mains power fails", _mains_lost),
                TimedEvent(START + OUTAGE, "mains power returns", _mains_back),
            ),
        ),
    )
}
