"""`pip install .` (not editable) ships the profiles and recordings and finds them."""

from __future__ import annotations

import re
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
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-v",  # the build backend's own output, to check it warns of nothing
            "--no-deps",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # A clean build: no setuptools deprecation (license as a table) or data-package warning.
    warnings = [
        line
        for line in (built.stdout + built.stderr).splitlines()
        if re.search(r"\w*Warning\b|is absent from the `packages`", line)
    ]
    assert warnings == [], "\n".join(warnings)
    (wheel,) = tmp_path.glob("hwpoller-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for static in (REPO / "poller" / "static").iterdir():
        assert f"poller/static/{static.name}" in names
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
