"""What `hwpoller discover` writes: target names, the YAML config, the summary table and the
progress line."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import yaml

from poller import protocols
from poller.discover.detect import AUTH_NAMES, Discovered
from poller.discover.probes import Endpoint, Found, clean

# Service-root names that say nothing about the device (most BMCs use one of these).
_GENERIC_NAMES = frozenset({"", "root service", "redfish root service", "service root", "root"})
_UNSAFE = re.compile(r"[^a-z0-9_.-]+")
MAX_TARGET_NAME = 63
# The labels left for the operator: the status page and every alert group by them.
EMPTY_LABELS = "{site: '', room: '', rack: ''}"


def _safe(text: str) -> str:
    """A device-supplied name as a target name: lower case, [a-z0-9_.-], no leading mark."""
    name = _UNSAFE.sub("-", text.strip().lower()).strip("-_.")
    return re.sub(r"-{2,}", "-", name)[:MAX_TARGET_NAME].rstrip("-_.")


def _address_name(endpoint: Endpoint) -> str:
    name = f"{endpoint.protocol}-{endpoint.host.replace('.', '-')}"
    if endpoint.port != protocols.get(endpoint.protocol).default_port:
        name += f"-{endpoint.port}"
    return name


def _base_name(found: Found) -> str:
    identity = found.identity
    if found.endpoint.protocol == "snmp":
        own = identity.get("sysName", "")
    elif found.endpoint.protocol == "redfish":
        own = identity.get("Name", "")
        own = "" if own.strip().lower() in _GENERIC_NAMES else own
    else:
        own = ""  # an IPMI BMC says nothing of its name before a login
    return _safe(own) or _address_name(found.endpoint)


def target_names(found: Sequence[Found]) -> dict[Endpoint, str]:
    """A unique, config-safe name per found device: its sysName or Redfish Name, else
    protocol and address; a repeated name gets -2, -3, ..."""
    used: set[str] = set()
    out: dict[Endpoint, str] = {}
    for item in found:
        base = name = _base_name(item)
        number = 2
        while name in used:
            name = f"{base}-{number}"
            number += 1
        used.add(name)
        out[item.endpoint] = name
    return out


def vendor_model(item: Discovered, limit: int = 60) -> str:
    """ "Vendor Model", without the vendor twice when the model already names it."""
    vendor, model = clean(item.vendor, limit), clean(item.model, limit)
    if vendor and model.lower().startswith(vendor.lower()):
        vendor = ""
    return " ".join(p for p in (vendor, model) if p)


def _describe(item: Discovered) -> str:
    """One comment line for a target: what the driver found, or why it could not tell."""
    if not item.detected:
        return f"not detected ({item.reason}): {clean(item.message)}"
    what = vendor_model(item, 120) or "unknown model"
    firmware = f", firmware {clean(item.firmware)}" if item.firmware else ""
    return f"{' + '.join(item.profiles)}: {what}{firmware}"


def _target_lines(item: Discovered) -> list[str]:
    """One target as YAML lines (indented for the targets list), with a comment above."""
    target: dict[str, Any] = {
        "name": item.name,
        "address": item.address,
        "protocol": item.endpoint.protocol,
        "auth": AUTH_NAMES[item.endpoint.protocol],
    }
    lines = [f"  # {_describe(item)}"]
    if len(item.profiles) == 1 and item.detected:
        target["profile"] = item.profiles[0]
    elif item.detected:
        # A pinned profile applies alone; left out, the driver applies every profile that
        # matches (a UPS card's own MIB and RFC 1628, an environment probe ...) at start.
        lines.append("  # profile: left out so that all of these apply (detected at start)")
    body = yaml.safe_dump([target], sort_keys=False, allow_unicode=False).splitlines()
    body.append(f"  labels: {EMPTY_LABELS}  # yours to fill in")
    lines.extend(f"  {line}" for line in body)
    if item.reason == "unsupported":
        # It answered, but no profile reads it (a switch, a printer): polling it would only
        # report it as down. Left for the operator to add a profile and uncomment.
        lines[1:] = [f"  # {line[2:]}" for line in lines[1:]]
    return lines


def render_config(
    discovered: Sequence[Discovered],
    auths: Mapping[str, Mapping[str, Any]],
    scanned: str,
    complete: bool = True,
) -> str:
    """The YAML config for the found devices, with comments for the operator."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    head = [
        f"# hwpoller configuration written by `hwpoller discover` on {stamp}",
        f"# scanned: {clean(scanned, 400)}",
        "# Check it with `hwpoller check-config FILE`. The labels are yours to fill in: site,",
        "# room and rack place each device on the status page and in every alert.",
    ]
    if not complete:
        head.append("# The scan stopped at --max-time: devices may be missing.")
    auth_text = yaml.safe_dump({"auths": dict(auths)}, sort_keys=False).splitlines()
    lines = [*head, *auth_text]
    if not discovered:
        lines.append("targets: []")
    else:
        lines.append("targets:")
        for item in discovered:
            lines.extend(_target_lines(item))
    return "\n".join(lines) + "\n"


def summary(discovered: Sequence[Discovered]) -> str:
    """The table printed at the end: one line per found device."""
    header = ("ADDRESS", "PROTOCOL", "PROFILE", "VENDOR/MODEL", "NAME", "STATUS")
    rows = [header]
    for item in discovered:
        endpoint = item.endpoint
        status = "ok" if item.detected else f"{item.reason}: {clean(item.message, 80)}"
        rows.append(
            (
                f"{endpoint.host}:{endpoint.port}",
                endpoint.protocol,
                "+".join(item.profiles) or "-",
                vendor_model(item, 40) or "-",
                item.name,
                status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


class ProgressLine:
    """A one-line progress bar on a terminal, rewritten in place (\\r), at most 10 a second."""

    WIDTH = 30

    def __init__(
        self, stream: TextIO, clock: Callable[[], float] = time.monotonic, every: float = 0.1
    ) -> None:
        self._stream = stream
        self._clock = clock
        self._every = every
        self._last = float("-inf")
        self._shown = 0

    def update(self, done: int, total: int, found: int) -> None:
        """Show how far the scan is (always the last probe's line)."""
        now = self._clock()
        if now - self._last < self._every and done < total:
            return
        self._last = now
        share = done / total if total else 1.0
        filled = int(share * self.WIDTH)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        text = f"[{bar}] {share:4.0%} {done:,}/{total:,} probes, {found} found"
        self._stream.write("\r" + text.ljust(self._shown))
        self._stream.flush()
        self._shown = len(text)

    def status(self, text: str) -> None:
        """Replace the bar with a short status line (e.g. while detecting)."""
        self._stream.write("\r" + text.ljust(self._shown))
        self._stream.flush()
        self._shown = len(text)

    def finish(self) -> None:
        """Erase the line, so the summary starts on a clean one."""
        if self._shown:
            self._stream.write("\r" + " " * self._shown + "\r")
            self._stream.flush()
            self._shown = 0
