"""Start and stop snmpsim serving .snmprec recordings on loopback (demo, tests, bench)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

RECORDINGS = Path(__file__).resolve().parent / "snmprec"


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nobody is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _responder() -> str:
    """Path of snmpsim's command responder, preferring the one beside this interpreter."""
    beside = Path(sys.executable).parent / "snmpsim-command-responder"
    if beside.exists():
        return str(beside)
    found = shutil.which("snmpsim-command-responder")
    if found is None:
        raise FileNotFoundError("snmpsim-command-responder not found: pip install snmpsim pysmi")
    return found


def _answers(host: str, port: int, community: str) -> bool:
    """True when an SNMP GET of sysObjectID.0 is answered."""
    from gufo.snmp.sync import SnmpSession  # noqa: PLC0415 - only needed here

    try:
        with SnmpSession(addr=host, port=port, community=community, timeout=0.5) as session:
            session.get("1.3.6.1.2.1.1.2.0")
    except Exception:  # noqa: BLE001 - not up yet, whatever the error
        return False
    return True


class SnmpSim:
    """An snmpsim process; community = recording file name without .snmprec."""

    def __init__(
        self,
        data_dirs: Sequence[Path] = (RECORDINGS,),
        ports: Sequence[int] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.ports = list(ports) if ports else [free_udp_port(host)]
        self._data_dirs = list(data_dirs)
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def port(self) -> int:
        """The first (often only) UDP port served."""
        return self.ports[0]

    def start(self, timeout: float = 90.0) -> SnmpSim:
        """Start snmpsim and wait until it answers (it first indexes every recording, in
        pure Python: on a 2-core machine running tests in parallel that took over 30 s)."""
        self._tmp = tempfile.TemporaryDirectory(prefix="hwpoller-snmpsim-")
        # snmpsim compiles every recording into an index; give each run its own data
        # directory (copies) and cache so runs never share state.
        data = Path(self._tmp.name) / "data"
        data.mkdir()
        communities = []
        for directory in self._data_dirs:
            for rec in sorted(Path(directory).glob("*.snmprec")):
                shutil.copyfile(rec, data / rec.name)
                communities.append(rec.stem)
        if not communities:
            raise FileNotFoundError(f"no .snmprec files in {self._data_dirs}")
        argv = [
            _responder(),
            f"--data-dir={data}",
            f"--cache-dir={Path(self._tmp.name) / 'cache'}",
            "--log-level=error",
        ]
        argv += [f"--agent-udpv4-endpoint={self.host}:{p}" for p in self.ports]
        env = {**os.environ, "SNMPSIM_ALLOW_ROOT": "true"}
        log = (Path(self._tmp.name) / "snmpsim.log").open("wb")
        self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                output = (Path(self._tmp.name) / "snmpsim.log").read_text(errors="replace")
                raise RuntimeError(f"snmpsim exited with {self._proc.returncode}:\n{output}")
            if all(_answers(self.host, p, communities[0]) for p in self.ports[:1]):
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"snmpsim did not answer within {timeout}s")

    def stop(self) -> None:
        """Terminate snmpsim and remove its temporary files."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SnmpSim:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
