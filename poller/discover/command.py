"""`hwpoller discover RANGE... --community-file F ...`: scan, detect, write a config.

Kept light (argparse only at import): the scanner and the drivers are imported when the
subcommand runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from poller.discover.probes import Probe

# Bounds of the flags: a typo must not become a flood (or a scan that never ends).
MAX_RATE = 10_000.0
MAX_PORTS = 32


def _ports(text: str) -> tuple[int, ...]:
    """--snmp-port and friends: "161", "161,1161" or "16100-16110"."""
    ports: list[int] = []
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high) if sep else int(low)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part.strip()!r} is not a port or range") from None
        if not 0 < first <= last < 65536:
            raise argparse.ArgumentTypeError(f"{part.strip()!r}: ports are 1-65535")
        ports.extend(p for p in range(first, last + 1) if p not in ports)
        if len(ports) > MAX_PORTS:
            raise argparse.ArgumentTypeError(f"at most {MAX_PORTS} ports per protocol")
    return tuple(ports)


def _bounded(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number within [low, high]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `discover` subcommand's flags."""
    parser.add_argument(
        "ranges",
        nargs="+",
        metavar="RANGE",
        help="IPv4 address, network (10.20.0.0/24) or span (10.20.0.10-10.20.0.50)",
    )
    snmp = parser.add_argument_group("SNMP (scanned when --community-file is given)")
    snmp.add_argument("--community-file", default=None, help="file holding the community")
    snmp.add_argument("--snmp-version", default="2c", choices=["1", "2c"])
    snmp.add_argument("--snmp-port", type=_ports, default=(161,), help="default 161")
    ipmi = parser.add_argument_group("IPMI (scanned when --ipmi-user is given)")
    ipmi.add_argument("--ipmi-user", default=None)
    ipmi.add_argument("--ipmi-password-file", default=None)
    ipmi.add_argument("--ipmi-privilege", default="user", choices=["callback", "user", "operator"])
    ipmi.add_argument("--ipmi-port", type=_ports, default=(623,), help="default 623")
    redfish = parser.add_argument_group("Redfish (scanned when --redfish-user is given)")
    redfish.add_argument("--redfish-user", default=None)
    redfish.add_argument("--redfish-password-file", default=None)
    redfish.add_argument(
        "--redfish-scheme",
        default="https",
        choices=["https", "http"],
        help="https (default); http for services without TLS, such as the simulator",
    )
    redfish.add_argument(
        "--redfish-port", type=_ports, default=None, help="default 443 (https) or 80 (http)"
    )
    trust = redfish.add_mutually_exclusive_group()
    trust.add_argument("--redfish-ca-file", default=None, help="CA the BMC certificates use")
    trust.add_argument(
        "--redfish-tls-insecure",
        action="store_true",
        help="accept any BMC certificate (written into the config as tls_insecure: true)",
    )
    bounds = parser.add_argument_group("bounds")
    bounds.add_argument(
        "--rate", type=_bounded(1, MAX_RATE), default=200.0, help="probes per second (200)"
    )
    bounds.add_argument(
        "--timeout", type=_bounded(0.05, 30), default=1.0, help="seconds per probe (1)"
    )
    bounds.add_argument(
        "--max-time",
        type=_bounded(1, 86400),
        default=600.0,
        help="seconds for the whole discovery, detection included (600)",
    )
    bounds.add_argument(
        "--detect-timeout",
        type=_bounded(0.5, 120),
        default=10.0,
        help="seconds for the one poll that detects a found device (10)",
    )
    bounds.add_argument(
        "--force", action="store_true", help="scan more than 65,536 addresses (up to a /8)"
    )
    parser.add_argument(
        "--config-out", default=None, help="write the config here (default: stdout)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --config-out file"
    )


@contextlib.contextmanager
def _quiet_polls(enabled: bool) -> Iterator[None]:
    """Detection's polls failing is what the summary reports; the scheduler's up/down log
    lines would only repeat it."""
    logger = logging.getLogger("hwpoller.scheduler")
    level = logger.level
    if enabled:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _usage_problems(args: argparse.Namespace) -> list[str]:
    problems = []
    if not (args.community_file or args.ipmi_user or args.redfish_user):
        problems.append(
            "give credentials for at least one protocol: --community-file (SNMP), "
            "--ipmi-user/--ipmi-password-file (IPMI), --redfish-user/--redfish-password-file "
            "(Redfish); only those protocols are scanned"
        )
    if bool(args.ipmi_user) != bool(args.ipmi_password_file):
        problems.append("--ipmi-user and --ipmi-password-file go together")
    if bool(args.redfish_user) != bool(args.redfish_password_file):
        problems.append("--redfish-user and --redfish-password-file go together")
    if args.config_out and Path(args.config_out).exists() and not args.overwrite:
        problems.append(f"--config-out {args.config_out} exists; pass --overwrite to replace it")
    return problems


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


async def discover(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Scan the ranges, detect what answered, write the config, print the summary."""
    from poller.discover.detect import (  # noqa: PLC0415 - the drivers load only here
        Credentials,
        check_credentials,
        community,
        detect,
    )
    from poller.discover.output import (  # noqa: PLC0415
        ProgressLine,
        render_config,
        summary,
        target_names,
    )
    from poller.discover.ranges import parse_ranges  # noqa: PLC0415
    from poller.discover.scan import Scanner  # noqa: PLC0415
    from poller.profiles import load_profiles  # noqa: PLC0415

    started = time.monotonic()
    deadline = started + args.max_time
    addresses = parse_ranges(args.ranges, force=args.force)
    credentials = Credentials(
        community_file=args.community_file,
        snmp_version=args.snmp_version,
        ipmi_user=args.ipmi_user,
        ipmi_password_file=args.ipmi_password_file,
        ipmi_privilege=args.ipmi_privilege,
        redfish_user=args.redfish_user,
        redfish_password_file=args.redfish_password_file,
        redfish_ca_file=args.redfish_ca_file,
        redfish_tls_insecure=args.redfish_tls_insecure,
    )
    checked = check_credentials(credentials)  # ConfigError before any packet is sent
    profiles = load_profiles()
    probes = _probes(args, credentials.protocols, community(checked))
    ports = "; ".join(f"{p.protocol} {','.join(map(str, p.ports))}" for p in probes)
    scanned = f"{' '.join(args.ranges)} ({ports})"
    progress = ProgressLine(err) if _is_tty(err) else None
    scanner = Scanner(probes, args.rate, args.timeout, progress.update if progress else None)
    try:
        result = await scanner.run(addresses, len(addresses), deadline)
        if progress is not None:
            progress.status(f"detecting {len(result.found)} devices ...")
        names = target_names(result.found)
        with _quiet_polls(args.log_level is None):
            found = await detect(
                result.found,
                names,
                credentials,
                profiles,
                scheme=args.redfish_scheme,
                poll_timeout=args.detect_timeout,
                deadline=deadline,
            )
    finally:
        if progress is not None:
            progress.finish()
    text = render_config(found, credentials.auths(), scanned, result.complete)
    # The loader must take what was written: the same check `hwpoller check-config` runs.
    from poller.config import parse_config  # noqa: PLC0415

    parse_config(text, "<discovered config>")
    table_stream = out
    if args.config_out:
        _write(Path(args.config_out), text)
    else:
        out.write(text)
        out.flush()
        table_stream = err  # stdout is the config, for `hwpoller discover ... > hwpoller.yml`
    elapsed = time.monotonic() - started
    detected = sum(d.detected for d in found)
    print(summary(found) if found else "no device answered", file=table_stream)
    note = "" if result.complete else f"; stopped at --max-time, {result.sent:,} sent"
    where = f", config written to {args.config_out}" if args.config_out else ""
    print(
        f"{len(addresses):,} addresses, {result.total:,} probes in {elapsed:.1f}s{note}: "
        f"{len(found)} found, {detected} detected{where}",
        file=table_stream,
    )
    return 0


def _probes(args: argparse.Namespace, protocols: Sequence[str], community: str) -> list[Probe]:
    """The presence probe of each protocol there are credentials for, on its ports."""
    from poller.discover.probes import IpmiProbe, RedfishProbe, SnmpProbe  # noqa: PLC0415

    probes: list[Probe] = []
    for protocol in protocols:
        if protocol == "snmp":
            probes.append(SnmpProbe(community, args.snmp_version, args.snmp_port))
        elif protocol == "ipmi":
            probes.append(IpmiProbe(args.ipmi_port, args.ipmi_privilege))
        elif protocol == "redfish":
            default = (443,) if args.redfish_scheme == "https" else (80,)
            probes.append(RedfishProbe(args.redfish_scheme, args.redfish_port or default))
    return probes


def _write(path: Path, text: str) -> None:
    """Write the config whole or not at all (a temporary file renamed over the target)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Entry point for `hwpoller discover`."""
    from poller.discover.ranges import RangeError  # noqa: PLC0415
    from poller.errors import ConfigError  # noqa: PLC0415

    out = out or sys.stdout
    err = err or sys.stderr
    problems = _usage_problems(args)
    if problems:
        for problem in problems:
            print(f"discover: {problem}", file=err)
        return 2
    try:
        return asyncio.run(discover(args, out, err))
    except RangeError as exc:
        print(f"discover: {exc}", file=err)
        return 2
    except ConfigError as exc:
        print(f"discover: configuration error:\n{exc}", file=err)
        return 1
    except OSError as exc:
        print(f"discover: {exc}", file=err)
        return 1
