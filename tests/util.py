"""Helpers shared by the tests: configs for simulated agents, one-shot polls, golden files."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from poller.config import Config, parse_config
from poller.driver import DriverContext, PollSpec, driver_for
from poller.exporter import exposition
from poller.model import PollResult
from poller.profiles import ProfileSet, load_profiles
from poller.scheduler import TargetRunner
from poller.store import Store

GOLDEN = Path(__file__).parent / "golden"
LABELS = {"site": "testsite", "room": "server-room", "rack": "A"}


def require(program: str) -> str:
    """Path of a peer program; fail (never skip) with an install hint when it is missing."""
    path = shutil.which(program)
    if path is None:
        raise AssertionError(f"{program} is not installed; `make test` installs it with apt-get")
    return path


def snmp_config(
    port: int, community: str, name: str | None = None, profile: str | None = None, **extra: Any
) -> Config:
    """A one-target v2c config pointing at a simulated agent."""
    target: dict[str, Any] = {
        "name": name or community,
        "address": f"127.0.0.1:{port}",
        "protocol": "snmp",
        "auth": "sim",
        "labels": dict(LABELS),
        "timeout": "4s",
        **extra,
    }
    if profile:
        target["profile"] = profile
    doc = {
        "auths": {"sim": {"protocol": "snmp", "version": "2c", "community": community}},
        "targets": [target],
    }
    return parse_config(yaml.safe_dump(doc), "<test>")


async def poll_once(config: Config, profiles: ProfileSet | None = None) -> PollResult:
    """Poll the config's first target once through the real driver and scheduler code."""
    profiles = profiles or load_profiles()
    target = config.targets[0]
    spec = PollSpec.from_config(config, target)
    context = DriverContext(profiles)
    store = Store()
    store.register(target.name, target.protocol, target.labels)
    runner = TargetRunner(spec, dict(target.labels), driver_for(spec, context), store, 0, 0)
    try:
        return await runner.poll_once()
    finally:
        await runner.driver.close()
        context.shutdown()


def golden_exposition(result: PollResult) -> str:
    """The /metrics text for one poll result, with timing values pinned for comparison."""
    store = Store()
    store.register(result.target, result.protocol, result.labels)
    store.record(replace(result, duration_seconds=0.25, finished_at=1_700_000_000.0))
    return exposition(store).decode()


def check_golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME.prom; UPDATE_GOLDEN=1 rewrites the file instead."""
    path = GOLDEN / f"{name}.prom"
    if os.environ.get("UPDATE_GOLDEN") == "1" or not path.exists():
        path.write_text(text)
        if os.environ.get("UPDATE_GOLDEN") != "1":
            raise AssertionError(f"{path} did not exist; wrote it: review and commit it")
    assert text == path.read_text(), f"exposition differs from {path} (UPDATE_GOLDEN=1 rewrites)"


def promtool_check_metrics(text: str) -> None:
    """`promtool check metrics` must accept the exposition without any complaint."""
    proc = subprocess.run(
        [require("promtool"), "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    output = (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 0 and not output.strip(), f"promtool check metrics:\n{output}"


def readings(result: PollResult) -> dict[tuple[str, str, str], float | str]:
    """{(quantity, sensor, limit_type or state-kind): value or state} for easy assertions."""
    assert result.success and result.data is not None, f"{result.reason}: {result.message}"
    out: dict[tuple[str, str, str], float | str] = {}
    for r in result.data.readings:
        extra = r.limit_type.value if r.limit_type else (r.hw_type.value if r.hw_type else "")
        out[(r.quantity.value, r.sensor, extra)] = r.state if r.state is not None else r.value
    return out
