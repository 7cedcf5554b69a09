"""`hwpoller probe` and `hwpoller profiles`: the CLI's main() against snmpsim, stdout captured."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from poller.cli import main
from poller.profiles import load_profiles
from poller.simulator.snmpsim import SnmpSim


@pytest.mark.integration
def test_probe_adhoc_address_prints_readings(
    snmpsim: SnmpSim, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["probe", "--address", f"127.0.0.1:{snmpsim.port}", "--community", "apc-emu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "profile apc-emu, vendor 'APC', model 'AP9340'" in out
    lines = out.splitlines()
    leak = next(line for line in lines if "Under Floor Leak Rope" in line and "leak " in line)
    assert leak.split()[0] == "leak" and leak.split()[-1] == "1" and " floor " in leak
    inlet = next(line for line in lines if "Rack 3 Inlet" in line and "high.critical" in line)
    assert inlet.split()[-1] == "35"


@pytest.mark.integration
def test_probe_with_explicit_profile(snmpsim: SnmpSim, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["probe", "--address", f"127.0.0.1:{snmpsim.port}", "--community", "eaton-9px-emp"]
    assert main([*argv, "--profile", "rfc1628-ups"]) == 0
    assert "profile rfc1628-ups" in capsys.readouterr().out


@pytest.mark.integration
def test_probe_unknown_device_says_why(
    snmpsim: SnmpSim, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["probe", "--address", f"127.0.0.1:{snmpsim.port}", "--community", "unknown-device"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "DOWN (unsupported): no profile matches sysObjectID 1.3.6.1.4.1.424242.1.8" in out


@pytest.mark.integration
def test_probe_named_targets_from_config(
    snmpsim: SnmpSim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = {
        "auths": {
            c: {"protocol": "snmp", "version": "2c", "community": c}
            for c in ("liebert-crac-leak", "dell-idrac")
        },
        "targets": [
            {
                "name": name,
                "address": f"127.0.0.1:{snmpsim.port}",
                "protocol": "snmp",
                "auth": auth,
                "timeout": "4s",
            }
            for name, auth in (("crac-1", "liebert-crac-leak"), ("web-3-bmc", "dell-idrac"))
        ],
    }
    path = tmp_path / "hwpoller.yml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["probe", "--config.file", str(path), "crac-1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("crac-1: up")
    # What the poll cost: detection (sysDescr/sysObjectID, presence probes), GETs and walks.
    cost = re.match(r"crac-1: up in \d+ ms, (\d+) requests\n", out)
    assert cost is not None, out.splitlines()[0]
    assert 3 <= int(cost.group(1)) <= 40
    assert "web-3-bmc" not in out
    assert any(line.split()[:3] == ["leak", "water", "under"] for line in out.splitlines())
    assert main(["probe", "--config.file", str(path), "no-such-target"]) == 2
    assert "no such target: no-such-target" in capsys.readouterr().err


def test_probe_needs_a_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe"]) == 2
    assert "probe needs --config.file or --address" in capsys.readouterr().err


def test_profiles_lists_every_profile_and_how_it_matches(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines() if not line.startswith(" ")}
    assert listed == set(load_profiles().names)
    lines = out.splitlines()

    def detail(name: str) -> str:
        i = next(i for i, line in enumerate(lines) if line.split()[0] == name)
        return lines[i + 1].strip()

    assert detail("liebert-gp-env") == "matches: sysObjectID 1.3.6.1.4.1.476.1.42"
    assert detail("entity-sensor") == (
        "matches: answers 1.3.6.1.2.1.47.1.4.1.0; generic fallback, superseded by every "
        "other profile"
    )
    assert detail("apc-mem") == "included by: apc-emu, apc-netbotz-powernet"
    assert detail("rfc1628-ups") == "matches: has objects under 1.3.6.1.2.1.33.1"
    i = next(i for i, line in enumerate(lines) if line.split()[0] == "eaton-xups")
    assert lines[i + 2].strip() == "supersedes: rfc1628-ups"
