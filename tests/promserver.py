"""A real Prometheus (Debian's `prometheus`) on loopback, loaded with the shipped rules."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.test_run_e2e import free_tcp_port
from tests.util import require

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "rules"


class Prometheus:
    """Scrapes one hwpoller every `interval` and evaluates the shipped rules as often."""

    def __init__(self, target: str, interval: str = "1s") -> None:
        self.port = free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._target = target
        self._interval = interval
        self._tmp = tempfile.TemporaryDirectory(prefix="hwpoller-prometheus-")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        """Write prometheus.yml next to copies of the rule files and start the server."""
        tmp = Path(self._tmp.name)
        rules = []
        for path in sorted(RULES.glob("*.yml")):
            shutil.copy(path, tmp / path.name)
            rules.append(path.name)
        config = {
            "global": {"scrape_interval": self._interval, "evaluation_interval": self._interval},
            "rule_files": rules,
            "scrape_configs": [
                {"job_name": "hwpoller", "static_configs": [{"targets": [self._target]}]}
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = (tmp / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [
                require("prometheus"),
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:  # noqa: S310
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            if self._proc.poll() is not None:
                raise RuntimeError((tmp / "prometheus.log").read_text())
            time.sleep(0.3)
        raise TimeoutError("prometheus did not become ready")

    def _get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as resp:  # noqa: S310
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: the result vector."""
        return list(self._get("/api/v1/query", query=expr)["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) with their labels and state."""
        return list(self._get("/api/v1/alerts")["alerts"])

    def log(self) -> str:
        """What the server printed, for assertion messages."""
        return (Path(self._tmp.name) / "prometheus.log").read_text(errors="replace")

    def stop(self) -> None:
        """Stop the server and delete its data."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._tmp.cleanup()

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
