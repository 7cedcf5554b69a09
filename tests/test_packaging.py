"""`pip install .` (not editable) ships the profiles and recordings and finds them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_carries_profiles_and_recordings(tmp_path: Path) -> None:
    # Build from a copy: setuptools reuses a build/ directory in the source tree, which may
    # hold files an earlier build saw and the tree no longer has.
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(".venv", "build", ".git", "*.egg-info", "__pycache__"),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("hwpoller-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for profile in (REPO / "mibs").glob("*.yaml"):
        assert f"poller/mibs/{profile.name}" in names
    for rec in (REPO / "poller" / "simulator" / "snmprec").glob("*.snmprec"):
        assert f"poller/simulator/snmprec/{rec.name}" in names
    # Installed without its source tree beside it, the package still loads every profile.
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import poller.profiles as p; s = p.load_profiles(); "
            "print(p.BUILTIN_PROFILE_DIR); print(len(s.names))",
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    where, count = probe.stdout.split()
    assert where == str(target / "poller" / "mibs")
    assert int(count) == len(list((REPO / "mibs").glob("*.yaml")))
