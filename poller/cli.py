"""Command line: run, check-config, probe, profiles, simulate, discover (Prometheus exporter
flag style)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

import yaml

from poller import __version__, protocols
from poller import loop as event_loop
from poller.app import load_all, probe, serve, setup_logging
from poller.config import Config, load_config, parse_config
from poller.errors import ConfigError, DeviceError, ProfileError
from poller.http import WebConfig
from poller.profiles import load_profiles


def _adhoc_config(args: argparse.Namespace) -> Config:
    """A one-target config from --address/--community/--profile."""
    target: dict[str, object] = {
        "name": args.address,
        "address": args.address,
        "protocol": "snmp",
        "auth": "adhoc",
    }
    if args.profile:
        target["profile"] = args.profile
    doc = {
        "auths": {
            "adhoc": {"protocol": "snmp", "version": args.snmp_version, "community": args.community}
        },
        "targets": [target],
    }
    return parse_config(yaml.safe_dump(doc), "<command line>")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="hwpoller", description=__doc__)
    parser.add_argument("--version", action="version", version=f"hwpoller {__version__}")
    parser.add_argument(
        "--log.level", dest="log_level", default=None, choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="poll devices and serve /metrics")
    run.add_argument("--config.file", dest="config", required=True)
    run.add_argument("--web.listen-address", dest="listen", default=None)
    run.add_argument("--web.config.file", dest="web_config", default=None)
    run.add_argument(
        "--event-loop",
        dest="event_loop",
        default=event_loop.DEFAULT,
        choices=event_loop.EVENT_LOOPS,
        help="uvloop (default: less CPU per poll) or asyncio's own loop",
    )
    # Also accepted after `run`, where exporter users put it; SUPPRESS keeps a value given
    # before the subcommand when it is not repeated here.
    run.add_argument(
        "--log.level",
        dest="log_level",
        default=argparse.SUPPRESS,
        choices=["debug", "info", "warning", "error"],
    )

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config")

    prb = sub.add_parser("probe", help="poll targets once and print what was read")
    prb.add_argument("targets", nargs="*", help="target names from the config (default: all)")
    prb.add_argument("--config.file", dest="config", default=None)
    prb.add_argument("--address", default=None, help="ad hoc SNMP target host[:port]")
    prb.add_argument("--community", default="public")
    prb.add_argument("--snmp-version", default="2c", choices=["1", "2c"])
    prb.add_argument("--profile", default=None)

    sub.add_parser("profiles", help="list the shipped profiles and what they match")

    from poller.simulator import command as simulate_command  # noqa: PLC0415

    simulate = sub.add_parser("simulate", help="run a simulated server room to poll")
    simulate_command.add_arguments(simulate)

    from poller.discover import command as discover_command  # noqa: PLC0415

    discover = sub.add_parser("discover", help="find devices in address ranges, write a config")
    discover_command.add_arguments(discover)
    return parser


def _list_profiles() -> int:
    """Print every profile with how it is recognised, or which profiles include it."""
    profiles = load_profiles()
    included_by: dict[str, list[str]] = {}
    for name in sorted(profiles.names):
        for other in profiles.get(name).included:
            included_by.setdefault(other, []).append(name)
    for record in protocols.protocols():
        for profile in profiles.of_protocol(record.name):
            how = record.describe_match(profile.spec)
            print(f"{profile.name:<24} {record.name:<7} {profile.description}")
            if how:
                print(f"{'':<33}matches: {'; '.join(how)}")
            elif profile.name in included_by:
                print(f"{'':<33}included by: {', '.join(included_by[profile.name])}")
            supersedes = getattr(profile.spec, "supersedes", [])
            if supersedes:
                print(f"{'':<33}supersedes: {', '.join(supersedes)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the hwpoller command."""
    # A Rust panic in gufo-snmp's decoder (a malformed reply) is a protocol error of one
    # target; Rust's panic hook would print a whole backtrace per bad packet when set.
    os.environ["RUST_BACKTRACE"] = "0"
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level or "info")
    try:
        if args.command == "check-config":
            config, _ = load_all(args.config)
            print(f"{args.config}: OK ({len(config.targets)} targets, {len(config.auths)} auths)")
            return 0
        if args.command == "profiles":
            return _list_profiles()
        if args.command == "simulate":
            from poller.simulator import command as simulate_command  # noqa: PLC0415

            return simulate_command.run(args)
        if args.command == "discover":
            from poller.discover import command as discover_command  # noqa: PLC0415

            return discover_command.run(args)
        if args.command == "probe":
            if args.config:
                config, profiles = load_all(args.config)
            elif args.address:
                config, profiles = _adhoc_config(args), load_profiles()
            else:
                print("probe needs --config.file or --address", file=sys.stderr)
                return 2
            return asyncio.run(probe(config, profiles, args.targets))
        web = WebConfig.load(args.web_config) if args.web_config else WebConfig()
        if args.log_level is None:
            with contextlib.suppress(ConfigError):
                logging.getLogger().setLevel(load_config(args.config).settings.log_level.upper())
        code = event_loop.run(
            serve(args.config, args.listen, web, args.log_level is not None), args.event_loop
        )
        # Sessions are closed (or given up on after CLOSE_TIMEOUT) by now. A BMC thread still
        # stuck in a blocking pyghmi call would make the interpreter wait for it at exit;
        # nothing is left to clean up, so leave without joining it.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return 1
    except ProfileError as exc:
        print(f"profile error:\n{exc}", file=sys.stderr)
        return 1
    except DeviceError as exc:  # pragma: no cover - drivers report these as results
        print(f"device error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
