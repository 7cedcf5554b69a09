"""`make run`: the simulated server room, polled by hwpoller, until Ctrl-C.

The simulated room (six server BMCs over RMCP+ and, unless --no-redfish, over Redfish too; a
UPS, a CRAC and an environmental monitor over SNMP) runs in this process on loopback, pure
Python, no hardware and no other programs; hwpoller polls them through its real drivers, on
the event loop `hwpoller run` uses, and serves /metrics.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

from poller import loop as event_loop
from poller.app import serve, setup_logging
from poller.http import WebConfig
from poller.simulator.room import SNMP_DEVICES, SimulatedRoom
from poller.simulator.scenarios import SCENARIOS

log = logging.getLogger("hwpoller.demo")


async def run_demo(
    scenario: str, speed: float, listen: str, interval: str, redfish: bool = False
) -> int:
    """Start the room, then the poller against it; stop both when the poller stops."""
    room = SimulatedRoom(scenario, speed, redfish=redfish)
    await room.start()
    try:
        with tempfile.TemporaryDirectory(prefix="hwpoller-demo-") as tmp:
            config = Path(tmp) / "hwpoller.yml"
            room.write_config(config, interval=interval, listen=listen)
            # The servers' BMCs answer on two protocols when Redfish is on: one device, two
            # targets. Count both, as the docs do.
            devices = len(room.model.servers) + len(SNMP_DEVICES)
            log.info(
                "%d simulated devices (%d targets); config written to %s",
                devices,
                len(room.devices),
                config,
            )
            log.info("open http://%s/ (status) and http://%s/metrics", listen, listen)
            return await serve(str(config), listen, WebConfig())
    finally:
        await room.stop()


def main() -> int:
    """Parse the demo's flags and run until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--web.listen-address", dest="listen", default="127.0.0.1:9730")
    parser.add_argument("--scenario", default="quiet", choices=sorted(SCENARIOS))
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--interval", default="10s", help="polling interval")
    # The servers' BMCs also serve Redfish (six more targets beside the IPMI ones).
    parser.add_argument(
        "--redfish",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("HWPOLLER_DEMO_REDFISH", "1") != "0",
        help="also poll every server's BMC over Redfish (default; --no-redfish or "
        "HWPOLLER_DEMO_REDFISH=0 to leave them out)",
    )
    parser.add_argument(
        "--event-loop",
        dest="event_loop",
        default=event_loop.DEFAULT,
        choices=event_loop.EVENT_LOOPS,
        help=f"the event loop, as for hwpoller run (default {event_loop.DEFAULT})",
    )
    args = parser.parse_args()
    setup_logging("info")
    try:
        return event_loop.run(
            run_demo(args.scenario, args.speed, args.listen, args.interval, args.redfish),
            args.event_loop,
        )
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
