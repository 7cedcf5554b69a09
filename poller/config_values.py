"""Parsers for configuration values: durations, addresses, ${ENV} and *_file secrets."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def parse_duration(value: Any) -> Any:
    """Accept 30, 2.5, "30s", "500ms", "1m30s", "2h" and return seconds as a float."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 500ms or 2m")  # noqa: TRY004
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        pos, total = 0, 0.0
        factors = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        for match in _DURATION_RE.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * factors[match.group(2)]
            pos = match.end()
        if pos == len(text) and pos > 0:
            return total
    raise ValueError(f"expected a duration such as 30s, 500ms or 2m, got {value!r}")


def split_address(address: str, default_port: int) -> tuple[str, int]:
    """Split "host", "host:port", "[v6]:port" or a bare IPv6 address into (host, port)."""
    text = address.strip()
    if not text:
        raise ValueError("address is empty")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"address {address!r} has no closing ]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"address {address!r}: unexpected text after ]")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""  # hostname, IPv4, or bare IPv6
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"address {address!r} has no valid host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"address {address!r}: port must be 1-65535")
    return host, int(port_text)


def expand_env(node: Any, path: str, problems: list[str]) -> Any:
    """Substitute ${VAR} in every string value, recording unset variables."""
    if isinstance(node, dict):
        return {
            k: expand_env(v, f"{path}.{k}" if path else str(k), problems) for k, v in node.items()
        }
    if isinstance(node, list):
        return [expand_env(v, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:

        def sub(match: re.Match[str]) -> str:
            value = os.environ.get(match.group(1))
            if value is None:
                problems.append(f"{path}: environment variable {match.group(1)} is not set")
                return ""
            return value

        return _ENV_RE.sub(sub, node)
    return node


def read_secret_files(data: Any, secret_keys: Iterable[str]) -> Any:
    """Replace `<key>_file: PATH` with `<key>: <file content>` before validation."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for key in secret_keys:
        file_key = f"{key}_file"
        if file_key not in out:
            continue
        if key in out:
            raise ValueError(f"give either {key} or {file_key}, not both")
        path = out.pop(file_key)
        if not isinstance(path, str):
            raise ValueError(f"{file_key} must be a file path")  # noqa: TRY004
        try:
            # Secret files conventionally end with a newline; it is never part of the secret.
            out[key] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"{file_key}: cannot read {path}: {exc.strerror}") from None
    return out
