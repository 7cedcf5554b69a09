"""Command line: run, check-config, probe, profiles (Prometheus exporter flag style)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence

import yaml

from poller import __version__
from poller.config import Config, check_profiles, load_config, parse_config
from poller.config_values import parse_listen_address
from poller.drivers import DriverContext, PollSpec, driver_for
from poller.errors import ConfigError, DeviceError, ProfileError
from poller.http import HttpServer, WebConfig
from poller.model import PollResult
from poller.profiles import ProfileSet, load_profiles
from poller.scheduler import Scheduler, TargetRunner
from poller.store import Store

log = logging.getLogger("hwpoller")


def load_all(path: str) -> tuple[Config, ProfileSet]:
    """Load a config and the profiles it can use, checking `profile:` references."""
    config = load_config(path)
    try:
        profiles = load_profiles(config.settings.profile_dirs)
    except ProfileError as exc:
        raise ConfigError(str(exc).splitlines()) from None
    known = {n: getattr(profiles.get(n).spec, "protocol", "snmp") for n in profiles.names}
    check_profiles(config, known)
    return config, profiles


def raise_open_files_limit() -> None:
    """Lift the soft RLIMIT_NOFILE to the hard limit: each SNMP target holds a UDP socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def setup_logging(level: str) -> None:
    """Plain one-line log records on stderr."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def reload_config(config_path: str, scheduler: Scheduler) -> Config | None:
    """Re-read the config file and apply it; on any error keep the running config."""
    try:
        # Reading and validating a big file takes a while; in a thread, polls and their
        # deadlines keep running on the event loop meanwhile.
        new_config, new_profiles = await asyncio.to_thread(load_all, config_path)
    except ConfigError as exc:
        log.error("reload failed, keeping the running config:\n%s", exc)
        return None
    except Exception:  # a bug in loading must not leave a half-applied reload
        log.exception("reload failed unexpectedly, keeping the running config")
        return None
    await scheduler.apply(new_config, new_profiles)
    log.info("reloaded %s: %d targets", config_path, len(new_config.targets))
    return new_config


async def serve(config_path: str, listen: str | None, web: WebConfig) -> int:
    """Poll and serve until SIGTERM/SIGINT; reload on SIGHUP."""
    config, profiles = load_all(config_path)
    if listen is not None:
        try:
            parse_listen_address(listen, 9730)
        except ValueError as exc:
            raise ConfigError([f"--web.listen-address: {exc}"]) from None
    raise_open_files_limit()
    store = Store()
    scheduler = Scheduler(config, profiles, store)
    address = listen or config.settings.listen_address
    # Bound before polling starts: a port in use is reported (one line, exit 1) by main().
    # Imported here: pysnmp is only needed by `run`.
    from poller.notifications import NotificationReceiver  # noqa: PLC0415

    receiver = NotificationReceiver(scheduler)
    server = HttpServer(address, store, receiver.exposition, web)
    await scheduler.start()
    server.start()
    await receiver.start(config)
    log.info(
        "hwpoller %s polling %d targets, serving http://%s/metrics",
        __version__,
        len(config.targets),
        address,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    # One reload at a time: SIGHUPs sent in a burst apply in order, never interleaved.
    reloading = asyncio.Lock()

    async def reload() -> None:
        async with reloading:
            new_config = await reload_config(config_path, scheduler)
            if new_config:
                await receiver.update(new_config)
            if new_config and listen is None and new_config.settings.listen_address != address:
                log.warning("settings.listen_address changed; it takes effect at restart")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The loop keeps only weak references to tasks: hold each reload until it has finished.
    reloads: set[asyncio.Task[None]] = set()

    def start_reload() -> None:
        task = loop.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, start_reload)
    await stop.wait()
    log.info("shutting down")
    server.stop()
    receiver.stop()
    await scheduler.stop()
    return 0


def _print_readings(result: PollResult) -> None:
    """Print one poll's outcome as a table for an operator adding a device."""
    if not result.success or result.data is None:
        print(f"{result.target}: DOWN ({result.reason}): {result.message}")
        return
    info = result.data.info
    print(f"{result.target}: up in {result.duration_seconds * 1000:.0f} ms")
    print(
        f"  profile {info.profile}, vendor {info.vendor!r}, model {info.model!r}, "
        f"firmware {info.firmware!r}, protocol {info.protocol}"
    )
    print(f"  {'quantity':<18} {'sensor':<32} {'location':<9} {'limit':<14} value")
    for r in result.data.readings:
        value = r.state if r.state is not None else f"{r.value:g}"
        extra = f" ({r.hw_type})" if r.hw_type is not None else ""
        print(
            f"  {r.quantity:<18} {r.sensor[:32]:<32} {r.location or '':<9} "
            f"{r.limit_type or '':<14} {value}{extra}"
        )
    for problem in result.data.partial_errors:
        print(f"  partial: {problem}")


async def probe(config: Config, profiles: ProfileSet, names: Sequence[str]) -> int:
    """Poll the named targets (all when none named) once and print what was read."""
    targets = [t for t in config.targets if not names or t.name in names]
    missing = set(names) - {t.name for t in targets}
    if missing:
        print(f"no such target: {', '.join(sorted(missing))}", file=sys.stderr)
        return 2
    store = Store()
    context = DriverContext(profiles, config.settings.snmp_concurrency, 4)
    failed = 0
    for target in targets:
        store.register(target.name, target.protocol, target.labels, target.sensor_label_rules())
        spec = PollSpec.from_config(config, target)
        runner = TargetRunner(spec, {}, driver_for(spec, context), store, 0, 0)
        result = await runner.poll_once()
        await runner.driver.close()
        _print_readings(result)
        failed += not result.success
    context.shutdown()
    return 1 if failed else 0


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
    return parser


def _list_profiles() -> int:
    """Print every profile with how it is recognised, or which profiles include it."""
    profiles = load_profiles()
    included_by: dict[str, list[str]] = {}
    for profile in profiles.of_protocol("snmp"):
        for name in getattr(profile.spec, "include", []):
            included_by.setdefault(name, []).append(profile.name)
    for protocol in ("snmp", "ipmi"):
        for profile in profiles.of_protocol(protocol):
            spec = profile.spec
            match = getattr(spec, "match", None)
            how = []
            if match is not None:
                for attr, label in (
                    ("sys_object_id", "sysObjectID"),
                    ("sys_descr", "sysDescr"),
                    ("oid_exists", "answers"),
                    ("subtree", "has objects under"),
                    ("manufacturer_id", "manufacturer"),
                ):
                    values = getattr(match, attr, None)
                    if values:
                        how.append(f"{label} {', '.join(map(str, values))}")
                if how and getattr(match, "fallback", False):
                    how.append("generic fallback, superseded by every other profile")
            print(f"{spec.name:<24} {protocol:<5} {spec.description}")
            if how:
                print(f"{'':<31}matches: {'; '.join(how)}")
            elif spec.name in included_by:
                print(f"{'':<31}included by: {', '.join(included_by[spec.name])}")
            supersedes = getattr(spec, "supersedes", [])
            if supersedes:
                print(f"{'':<31}supersedes: {', '.join(supersedes)}")
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
        code = asyncio.run(serve(args.config, args.listen, web))
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
