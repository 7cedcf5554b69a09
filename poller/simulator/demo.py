"""`make run`: simulated devices (snmpsim serving the bundled recordings) polled by hwpoller.

Every recording in poller/simulator/snmprec becomes one target named after the file, so the
demo shows each shipped device family. Ctrl-C stops the poller and the simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path

import yaml

from poller.cli import serve, setup_logging
from poller.http import WebConfig
from poller.simulator.snmpsim import RECORDINGS, SnmpSim

log = logging.getLogger("hwpoller.demo")


def demo_config(port: int, recordings: Path = RECORDINGS) -> dict[str, object]:
    """A config with one SNMP target per recording, two per rack."""
    auths: dict[str, object] = {}
    targets: list[dict[str, object]] = []
    for i, rec in enumerate(sorted(recordings.glob("*.snmprec"))):
        auths[rec.stem] = {"protocol": "snmp", "version": "2c", "community": rec.stem}
        targets.append(
            {
                "name": rec.stem,
                "address": f"127.0.0.1:{port}",
                "protocol": "snmp",
                "auth": rec.stem,
                "labels": {"site": "demo", "room": "server-room", "rack": "AB"[i % 2]},
            }
        )
    return {"settings": {"interval": "15s"}, "auths": auths, "targets": targets}


def main() -> int:
    """Start the simulator and the poller; serve until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--web.listen-address", dest="listen", default="127.0.0.1:9730")
    args = parser.parse_args()
    setup_logging("info")
    with SnmpSim() as sim, tempfile.TemporaryDirectory(prefix="hwpoller-demo-") as tmp:
        config = Path(tmp) / "hwpoller.yml"
        config.write_text(yaml.safe_dump(demo_config(sim.port), sort_keys=False))
        log.info("simulated devices on udp://127.0.0.1:%d; config written to %s", sim.port, config)
        log.info("open http://%s/ (status) and http://%s/metrics", args.listen, args.listen)
        try:
            return asyncio.run(serve(str(config), args.listen, WebConfig()))
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
