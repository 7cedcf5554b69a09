"""`hwpoller simulate`: run the simulated room until Ctrl-C and write its hwpoller config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from poller.simulator.scenarios import SCENARIOS

log = logging.getLogger("hwpoller.simulator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `simulate` subcommand's flags."""
    parser.add_argument("--scenario", default="quiet", choices=sorted(SCENARIOS))
    parser.add_argument(
        "--speed", type=float, default=1.0, help="scenario seconds per wall second (default 1)"
    )
    parser.add_argument(
        "--config-out", default=None, help="write the hwpoller config here (default: stdout)"
    )
    parser.add_argument("--listen-host", default="127.0.0.1", help="address the devices bind")
    parser.add_argument(
        "--advertise-host",
        default=None,
        help="host name written into the config (default: the listen host), e.g. a "
        "compose service name",
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=0,
        help="UDP port of the first device, the others follow (default 0: any free ports)",
    )
    parser.add_argument(
        "--interval", default="10s", help="polling interval written into the config"
    )
    parser.add_argument(
        "--notify-to",
        default="127.0.0.1:0",
        help="where the SNMP devices send traps when their state changes: hwpoller's "
        "notification receiver, written into the config as settings.notification_address "
        "(default 127.0.0.1:0: a free port on loopback; 'none': send no traps)",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="web_listen",
        default="127.0.0.1:9730",
        help="listen_address written into the config",
    )


async def simulate(args: argparse.Namespace) -> int:
    """Start the room, write the config, serve until SIGINT/SIGTERM."""
    # Imported here: the SNMP engine and crypto are not needed by other subcommands.
    from poller.simulator.room import SimulatedRoom  # noqa: PLC0415

    notify = None if args.notify_to.lower() in ("", "none") else args.notify_to
    room = SimulatedRoom(args.scenario, args.speed, args.listen_host, args.base_port, notify=notify)
    await room.start()
    try:
        options = {
            "interval": args.interval,
            "listen": args.web_listen,
            "advertise": args.advertise_host,
        }
        if args.config_out:
            room.write_config(args.config_out, **options)
            log.info("config written to %s", args.config_out)
        else:
            import yaml  # noqa: PLC0415

            sys.stdout.write(yaml.safe_dump(room.config(**options), sort_keys=False))
            sys.stdout.flush()
        for device in room.devices:
            log.info("  %-13s %-4s %s:%d", device.name, device.protocol, device.host, device.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await room.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point for `hwpoller simulate`."""
    try:
        return asyncio.run(simulate(args))
    except (ValueError, OSError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 1
