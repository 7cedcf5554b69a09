"""The README and docs say what the program does: the simulated room's device and target
counts and names, the default event loop, and the packages `make test` installs."""

from __future__ import annotations

import re
from pathlib import Path

from poller import loop
from poller.simulator.room import SNMP_DEVICES, RoomThread

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SIMULATOR_DOC = (ROOT / "docs" / "simulator.md").read_text()
WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
]
NUMBER = r"(\d+|" + "|".join(WORDS) + r")"


def number(text: str) -> int:
    """A count as written in prose: a numeral or a word up to twelve."""
    return int(text) if text.isdigit() else WORDS.index(text.lower())


def counts(text: str, noun: str) -> list[int]:
    """Every count written before `noun` ("nine devices", "15 targets", "six servers")."""
    found = re.findall(rf"\b{NUMBER}\s+(?:simulated\s+|new\s+)?{noun}\b", text, re.I)
    return [number(n.lower()) for n in found]


def test_device_and_target_counts_match_the_simulated_room() -> None:
    with RoomThread(redfish=True) as room:
        targets = {d.name for d in room.devices}
        servers = len(room.model.servers)
    with RoomThread(redfish=False) as room:
        without_redfish = len(room.devices)
    devices = servers + len(SNMP_DEVICES)
    for name, text in (("README.md", README), ("docs/simulator.md", SIMULATOR_DOC)):
        assert counts(text, "devices") and set(counts(text, "devices")) == {devices}, name
        # make run's room has Redfish; `--no-redfish` and `hwpoller simulate` do not.
        assert len(targets) in counts(text, "targets"), name
        assert set(counts(text, "targets")) <= {len(targets), without_redfish}, name
        assert set(counts(text, "servers")) == {servers}, name
    # The devices table of docs/simulator.md names every target, and no other.
    section = SIMULATOR_DOC.split("\n## Devices\n", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| `")]
    documented = {n for line in table for n in re.findall(r"`([a-z0-9-]+)`", line.split("|")[1])}
    assert documented == targets


def test_the_default_event_loop_is_the_one_the_readme_names() -> None:
    assert f"`--event-loop` is\n`{loop.DEFAULT}` (the default" in README or re.search(
        rf"`{loop.DEFAULT}`\s+\(the\s+default", README
    )
    assert f"`hwpoller run` ({loop.DEFAULT})" in README


def test_the_readme_apt_line_is_the_makefile_list() -> None:
    makefile = (ROOT / "Makefile").read_text()
    packages = re.search(r"^APT_PACKAGES := (.+)$", makefile, re.M)
    assert packages is not None
    line = re.search(r"^\s+sudo apt-get install (.+)$", README, re.M)
    assert line is not None
    assert line.group(1).split() == packages.group(1).split()
