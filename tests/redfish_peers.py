"""Redfish peers for the tests: sushy-static (DMTF mockups as served by OpenStack's
sushy-tools) on loopback, and mockup copies edited into variants."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.util import require

# The DMTF public-rackmount1 mockup, shipped in the tests with its licence (BSD-3).
MOCKUP = Path(__file__).resolve().parent / "fixtures" / "redfish" / "public-rackmount1"
FIXTURES = Path(__file__).parent / "fixtures" / "redfish"


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def sushy_static_program() -> str:
    """The sushy-static console script of this virtual environment (or on PATH)."""
    beside = Path(sys.executable).parent / "sushy-static"
    return str(beside) if beside.exists() else require("sushy-static")


class SushyStatic:
    """`sushy-static -m MOCKUP -i 127.0.0.1 -p PORT` until stopped."""

    def __init__(self, mockup: Path = MOCKUP, tls: tuple[Path, Path] | None = None) -> None:
        if not (mockup / "index.json").exists():
            raise AssertionError(f"no Redfish mockup at {mockup}")
        self.mockup = mockup
        self.tls = tls  # (certificate, key): serve HTTPS
        self.port = free_tcp_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The target address of the service as a URL."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> SushyStatic:
        """Start it and wait until the service root answers."""
        argv = [sushy_static_program(), "-m", str(self.mockup), "-i", "127.0.0.1"]
        argv += ["-p", str(self.port)]
        if self.tls is not None:
            argv += ["-c", str(self.tls[0]), "-k", str(self.tls[1])]
        # It prints every request's headers to stdout: discarded.
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise AssertionError(f"sushy-static exited with {self._proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError("sushy-static did not answer")

    def stop(self) -> None:
        """Terminate it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(5)
        self._proc = None

    def __enter__(self) -> SushyStatic:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def copy_mockup(dest: Path, source: Path = MOCKUP) -> Path:
    """A writable copy of a mockup tree."""
    shutil.copytree(source, dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


def read_json(tree: Path, resource: str) -> dict[str, Any]:
    """One resource of a mockup tree, e.g. "Chassis/1U/Thermal"."""
    data: dict[str, Any] = json.loads((tree / resource / "index.json").read_text())
    return data


def write_json(tree: Path, resource: str, data: dict[str, Any]) -> None:
    """Write (or replace) one resource of a mockup tree."""
    path = tree / resource / "index.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
