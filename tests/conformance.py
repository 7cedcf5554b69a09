"""Conformance against LibreNMS: poll real recordings with no profile given and check that every
sensor LibreNMS discovers on them has an hwpoller reading of the same quantity and value.

The recordings and LibreNMS's answers live outside the project: a directory of pairs
`NAME.snmprec` (an snmpsim walk of a real device, as in LibreNMS's own test corpus) and
`NAME.librenms.json` (a JSON list of the sensors LibreNMS discovers on that walk, each with
sensor_class, sensor_descr, sensor_current, sensor_limit, sensor_limit_low, sensor_oid and
sensor_index), named by the HWPOLLER_CORPUS environment variable. Nothing from them is copied
here. Where hwpoller differs from LibreNMS on purpose, tests/conformance_exceptions/*.yaml say
why, one line each.

`make conformance CORPUS=DIR` runs tests/test_conformance.py (and the corpus half of
test_snmp_wire.py), which assert the bar below; `python -m tests.conformance [--corpus DIR]
[--only NAME...]` prints the score per device and in total and exits 1 below the bar.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from poller.config import Config
from poller.driver import DriverContext, PollSpec
from poller.model import PollResult, Quantity, Reading
from poller.profiles import ProfileSet, load_profiles
from poller.scheduler import TargetRunner
from poller.simulator.snmpsim import SnmpSim
from poller.snmp.driver import SnmpDriver
from poller.store import Store
from tests.util import golden_exposition, snmp_config

ROOT = Path(__file__).resolve().parent.parent
# Share of LibreNMS's sensors (those not excepted in tests/conformance_exceptions/, each
# with its reason) that hwpoller must read with the same quantity and value.
MIN_MATCHED = 0.95
# Share of recordings at least one profile must recognise.
MIN_RECOGNISED = 0.85
# A guard against excepting misses away: at most 12 % of LibreNMS's sensors. (The largest
# single rule is the InRow DX's 18 unscaled coolingUnit values.)
MAX_EXCEPTED = 0.12
# What to tell someone who runs the conformance lane without a corpus.
HOW_TO_GET = (
    "set HWPOLLER_CORPUS (or `make conformance CORPUS=DIR`) to a directory of NAME.snmprec "
    "walks with NAME.librenms.json beside each: the sensors LibreNMS discovers on that walk "
    "(LibreNMS's own test data has both: tests/snmpsim/*.snmprec, and the sensors in "
    "tests/data/*.json; see the module docstring of tests/conformance.py for the format)"
)


class CorpusMissingError(RuntimeError):
    """The conformance lane was asked for without a corpus to read."""


def corpus_dir() -> Path:
    """The external corpus named by HWPOLLER_CORPUS; CorpusMissingError says how to get one."""
    value = os.environ.get("HWPOLLER_CORPUS", "").strip()
    if not value:
        raise CorpusMissingError(f"no conformance corpus: {HOW_TO_GET}")
    path = Path(value)
    if not any(path.glob("*.librenms.json")):
        raise CorpusMissingError(f"no NAME.librenms.json files in {path}: {HOW_TO_GET}")
    return path


def below_bar(totals: dict[str, int]) -> list[str]:
    """Why the totals miss the bar (empty when they meet it)."""
    wanted = totals["matched"] + totals["missed"]
    problems = []
    if totals["matched"] < MIN_MATCHED * wanted:
        problems.append(f"matched {totals['matched']}/{wanted}, below {MIN_MATCHED:.0%}")
    if totals["recognised"] < MIN_RECOGNISED * totals["devices"]:
        problems.append(
            f"recognised {totals['recognised']}/{totals['devices']}, below {MIN_RECOGNISED:.0%}"
        )
    if totals["excepted"] > MAX_EXCEPTED * totals["sensors"]:
        problems.append(f"excepted {totals['excepted']}, above {MAX_EXCEPTED:.0%} of sensors")
    return problems


EXCEPTIONS = Path(__file__).resolve().parent / "conformance_exceptions"

# LibreNMS class -> (quantity, factor to base units, absolute tolerance in base units).
# LibreNMS rounds some values to whole units, so a tolerance of half a unit (or one minute
# of runtime) still means "the same value".
CLASSES: dict[str, tuple[Quantity, float, float]] = {
    "temperature": (Quantity.TEMPERATURE, 1.0, 0.51),
    "humidity": (Quantity.HUMIDITY, 0.01, 0.0051),
    "fanspeed": (Quantity.FAN_SPEED, 1.0, 1.0),
    "charge": (Quantity.BATTERY_CHARGE, 0.01, 0.0051),
    "runtime": (Quantity.BATTERY_TIME_LEFT, 60.0, 60.0),
}


@dataclass
class Exemption:
    """One reason LibreNMS's sensor is not expected from hwpoller."""

    reason: str
    device: str | None = None
    sensor_class: str | None = None
    descr: str | None = None  # regular expression searched in sensor_descr
    oid: str | None = None  # regular expression searched in sensor_oid
    current: float | None = None

    def covers(self, device: str, sensor: dict[str, Any]) -> bool:
        """Whether this exception applies to one LibreNMS sensor of one device."""
        if self.device is not None and self.device != device:
            return False
        if self.sensor_class is not None and self.sensor_class != sensor["sensor_class"]:
            return False
        if self.descr is not None and not re.search(self.descr, str(sensor["sensor_descr"])):
            return False
        if self.oid is not None and not re.search(self.oid, str(sensor["sensor_oid"])):
            return False
        return self.current is None or float(sensor["sensor_current"]) == self.current


def load_exceptions(directory: Path = EXCEPTIONS) -> list[Exemption]:
    """The exception data files (one per device family); every entry must carry a reason."""
    out = []
    for path in sorted(directory.glob("*.yaml")):
        for i, entry in enumerate(yaml.safe_load(path.read_text()) or []):
            if not isinstance(entry, dict) or not entry.get("reason"):
                raise ValueError(f"{path}: entry {i} needs a reason")
            fields = dict(entry)
            if "class" in fields:
                fields["sensor_class"] = fields.pop("class")
            out.append(Exemption(**fields))
    return out


@dataclass
class DeviceScore:
    """How one recording fared."""

    name: str
    result: PollResult
    matched: list[dict[str, Any]] = field(default_factory=list)
    missed: list[dict[str, Any]] = field(default_factory=list)
    excepted: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    detection_requests: int = 0

    @property
    def recognised(self) -> bool:
        """The device was polled through at least one profile."""
        return self.result.success


def recordings(corpus: Path, only: Iterable[str] = ()) -> list[str]:
    """Names of the recordings that have a LibreNMS answer beside them."""
    names = sorted(p.name.removesuffix(".librenms.json") for p in corpus.glob("*.librenms.json"))
    wanted = set(only)
    return [n for n in names if not wanted or n in wanted]


def match_sensors(
    device: str,
    sensors: Sequence[dict[str, Any]],
    readings: Sequence[Reading],
    exceptions: Sequence[Exemption],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """(matched, missed, excepted): each LibreNMS sensor paired with a distinct reading of the
    same quantity whose value agrees, closest values first."""
    pool: dict[Quantity, list[float]] = {}
    for r in readings:
        if r.limit_type is None and r.state is None:
            pool.setdefault(r.quantity, []).append(r.value)
    matched, missed, excepted = [], [], []
    wanted = []
    for sensor in sensors:
        if sensor["sensor_class"] not in CLASSES:
            continue
        why = next((e.reason for e in exceptions if e.covers(device, sensor)), None)
        if why is not None:
            excepted.append((sensor, why))
        else:
            wanted.append(sensor)
    pairs = []
    for i, sensor in enumerate(wanted):
        quantity, factor, tolerance = CLASSES[sensor["sensor_class"]]
        expected = float(sensor["sensor_current"]) * factor
        for j, value in enumerate(pool.get(quantity, [])):
            gap = abs(value - expected)
            if gap <= tolerance:
                pairs.append((gap, i, quantity, j))
    pairs.sort()
    used_sensors: set[int] = set()
    used_readings: set[tuple[Quantity, int]] = set()
    for _, i, quantity, j in pairs:
        if i in used_sensors or (quantity, j) in used_readings:
            continue
        used_sensors.add(i)
        used_readings.add((quantity, j))
    for i, sensor in enumerate(wanted):
        (matched if i in used_sensors else missed).append(sensor)
    return matched, missed, excepted


def duplicate_series(result: PollResult) -> list[str]:
    """Series (name + labels) that appear more than once in the target's exposition."""
    seen: set[str] = set()
    dupes = []
    for line in golden_exposition(result).splitlines():
        if line.startswith("#") or not line:
            continue
        series = line.rsplit(" ", 1)[0]
        if series in seen:
            dupes.append(series)
        seen.add(series)
    data = result.data
    if data is not None:
        keys = [r.series for r in data.readings]
        dupes += [str(k) for k in keys if keys.count(k) > 1]
    return dupes


async def _poll(config: Config, profiles: ProfileSet) -> tuple[PollResult, int]:
    """One poll through the scheduler's path; also how many requests detection took."""
    target = config.targets[0]
    spec = PollSpec.from_config(config, target)
    context = DriverContext(profiles)
    driver = SnmpDriver(spec, context)
    store = Store()
    store.register(target.name, target.protocol, target.labels)
    runner = TargetRunner(spec, dict(target.labels), driver, store, 0, 0)
    try:
        return await runner.poll_once(), driver.detection_requests
    finally:
        await driver.close()
        context.shutdown()


async def score_all(
    sim: SnmpSim,
    names: Sequence[str],
    corpus: Path,
    profiles: ProfileSet | None = None,
    parallel: int = 6,
) -> list[DeviceScore]:
    """Poll every named recording through snmpsim (no profile given) and score it."""
    profiles = profiles or load_profiles()
    exceptions = load_exceptions()
    gate = asyncio.Semaphore(parallel)

    async def one(name: str) -> DeviceScore:
        target = re.sub(r"[^A-Za-z0-9_.:@-]", "-", name)
        config = snmp_config(sim.port, name, name=target, timeout="40s", interval="60s")
        async with gate:
            result, requests = await _poll(config, profiles)
        sensors = json.loads((corpus / f"{name}.librenms.json").read_text())
        readings = result.data.readings if result.data else ()
        matched, missed, excepted = match_sensors(name, sensors, readings, exceptions)
        dupes = duplicate_series(result)
        return DeviceScore(name, result, matched, missed, excepted, dupes, requests)

    return list(await asyncio.gather(*(one(n) for n in names)))


def summary(scores: Sequence[DeviceScore]) -> dict[str, int]:
    """Totals over every device."""
    matched = sum(len(s.matched) for s in scores)
    missed = sum(len(s.missed) for s in scores)
    excepted = sum(len(s.excepted) for s in scores)
    return {
        "devices": len(scores),
        "recognised": sum(s.recognised for s in scores),
        "sensors": matched + missed + excepted,
        "matched": matched,
        "missed": missed,
        "excepted": excepted,
        "duplicates": sum(len(s.duplicates) for s in scores),
        "detection_max": max((s.detection_requests for s in scores), default=0),
        "detection_total": sum(s.detection_requests for s in scores),
    }


def report(scores: Sequence[DeviceScore], verbose: bool = False) -> str:
    """A human-readable table of the scores."""
    lines = []
    for s in scores:
        total = len(s.matched) + len(s.missed)
        state = (
            f"{s.result.data.info.profile if s.result.data else ''}"
            if s.recognised
            else f"{s.result.reason}: {s.result.message[:90]}"
        )
        readings = len(s.result.data.readings) if s.result.data else 0
        lines.append(
            f"{s.name:<38} {len(s.matched):>3}/{total:<3} "
            f"(+{len(s.excepted)} excepted) readings={readings:<4} {state}"
        )
        if verbose:
            for sensor in s.missed:
                lines.append(
                    f"    MISSED {sensor['sensor_class']:<11} {sensor['sensor_current']!s:<8} "
                    f"{sensor['sensor_descr']!s:<40} {sensor['sensor_oid']}"
                )
            lines.extend(f"    DUPLICATE {d}" for d in s.duplicates)
    t = summary(scores)
    wanted = t["matched"] + t["missed"]
    share = 100.0 * t["matched"] / wanted if wanted else 100.0
    lines.append(
        f"conformance: {t['matched']}/{wanted} LibreNMS sensors matched ({share:.1f}%), "
        f"{t['excepted']} excepted with a reason, {t['recognised']}/{t['devices']} devices "
        f"recognised, {t['duplicates']} duplicate series"
    )
    mean = t["detection_total"] / t["devices"] if t["devices"] else 0.0
    lines.append(
        f"detection: {mean:.1f} requests per device on average, {t['detection_max']} at most "
        "(sysDescr/sysObjectID GET, one GET of oid_exists probes, one GETNEXT per subtree)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the corpus with snmpsim, poll it, print the score."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=None, help="default: $HWPOLLER_CORPUS")
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.corpus is None:
        try:
            args.corpus = corpus_dir()
        except CorpusMissingError as exc:
            print(exc, file=sys.stderr)
            return 2
    names = recordings(args.corpus, args.only)
    if not names:
        print(f"no recordings in {args.corpus}", file=sys.stderr)
        return 2
    sim = SnmpSim(data_dirs=[args.corpus])
    sim.start(timeout=120)
    try:
        scores = asyncio.run(score_all(sim, names, args.corpus))
    finally:
        sim.stop()
    print(report(scores, verbose=args.verbose))
    problems = below_bar(summary(scores)) if not args.only else []
    for problem in problems:
        print(f"below the bar: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
