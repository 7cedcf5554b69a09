"""Parsers for configuration values: the YAML reader and its limits, durations, addresses,
${ENV} and *_file secrets."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# A config for a few thousand devices is well under 1 MiB; 4 MiB leaves room for big inventories
# while bounding the memory and the time (the pure-Python YAML parser reads ~1 MiB/s) a mistaken
# `--config.file /var/log/syslog` can cost.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
# The deepest real config is about six levels; deeper nesting is a broken or hostile file, and
# PyYAML's composer recurses once per level.
MAX_YAML_DEPTH = 64
# Nodes that aliases (*name) may add when expanded. Sharing a labels block between thousands of
# targets stays far below this; a "billion laughs" file reaches it after a few levels instead of
# expanding to gigabytes.
MAX_ALIAS_NODES = 100_000
# Secret files hold one password or community; anything bigger is the wrong file.
MAX_SECRET_FILE_BYTES = 64 * 1024
_MERGE_TAG = "tag:yaml.org,2002:merge"

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


_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


def parse_listen_address(address: str, default_port: int) -> tuple[str, int]:
    """Split a listen address: "host:port", "[v6]:port", or ":port" for every interface.

    The host must be an IP address or a syntactically valid host name, so a typo is reported
    by check-config instead of surfacing as a bind failure at start-up."""
    text = address.strip()
    if text.startswith(":") and text.count(":") == 1:
        host, port_text = "", text[1:]
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{address!r}: port must be 1-65535")
        return host, int(port_text)
    host, port = split_address(text, default_port)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if ":" in host or not _HOSTNAME_RE.match(host) or host.replace(".", "").isdigit():
            raise ValueError(
                f"{address!r}: {host!r} is neither an IP address nor a valid host name"
            ) from None
    return host, port


def _line_col(data: bytes | str, offset: int) -> str:
    head = data[:offset]
    newline = b"\n" if isinstance(head, bytes) else "\n"
    line = head.count(newline) + 1  # type: ignore[arg-type]
    column = offset - (head.rfind(newline) + 1)  # type: ignore[arg-type]
    return f"line {line}, column {column + 1}"


def decode_config(data: bytes) -> str:
    """UTF-8 text of a config file; ValueError says in one line why it is not usable."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(
            f"the file is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB; "
            "is it the right file?"
        )
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        raise ValueError("the file is UTF-32 encoded; save it as UTF-8")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError("the file is UTF-16 encoded; save it as UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        # UTF-16 without a byte-order mark puts a NUL next to every ASCII character.
        if data.count(b"\x00") * 3 >= len(data):
            raise ValueError("the file looks UTF-16 encoded; save it as UTF-8")
        raise ValueError(
            f"{_line_col(data, nul)}: the file contains a NUL byte; is it a binary file?"
        )
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is harmless
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{_line_col(data, exc.start)}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
            "save the file as UTF-8"
        ) from None


class _LimitedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with limits on nesting and alias expansion, and duplicate keys
    recorded (PyYAML silently keeps the last one)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []
        self._weights: dict[int, int] = {}  # id(node) -> node count once aliases are expanded
        self._open_anchors: set[str] = set()
        self._aliased = 0
        self._path: list[str] = []

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            node = self.anchors.get(event.anchor)  # an unknown alias is PyYAML's error
            if event.anchor in self._open_anchors:
                raise ComposerError(
                    None,
                    None,
                    f"alias *{event.anchor} is used inside the node it names "
                    "(a recursive structure)",
                    mark,
                )
            if node is not None:
                self._aliased += self._weights.get(id(node), 1)
                if self._aliased > MAX_ALIAS_NODES:
                    raise ComposerError(
                        None,
                        None,
                        f"aliases (*name) expand to more than {MAX_ALIAS_NODES} values; "
                        "the file is too repetitive to be a configuration",
                        mark,
                    )
            return super().compose_node(parent, index)
        if len(self._path) >= MAX_YAML_DEPTH:
            raise ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", mark)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open_anchors.add(anchor)
        self._path.append(_path_part(parent, index))
        try:
            composed = super().compose_node(parent, index)
        finally:
            self._path.pop()
            self._open_anchors.discard(anchor)
        if isinstance(composed, SequenceNode):
            weight = 1 + sum(self._weights.get(id(n), 1) for n in composed.value)
        elif isinstance(composed, MappingNode):
            weight = 1 + sum(
                self._weights.get(id(k), 1) + self._weights.get(id(v), 1) for k, v in composed.value
            )
        else:
            weight = 1
        self._weights[id(composed)] = weight
        return composed

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node: MappingNode = super().compose_mapping_node(anchor)
        seen: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
                continue  # `<<: *base` merges on purpose; its keys may be overridden
            line = key.start_mark.line + 1
            first = seen.get((key.tag, key.value))
            if first is None:
                seen[(key.tag, key.value)] = line
                continue
            where = _join_path([*self._path[1:], str(key.value)])
            self.duplicates.append(
                f"{where}: duplicate key on line {line} (first on line {first}); give each key once"
            )
        return node

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as exc:
            # e.g. a date such as 2024-02-30, or `!!int abc`: PyYAML lets these escape raw.
            raise ConstructorError(
                None, None, f"cannot read value {str(node.value)[:40]!r}: {exc}", node.start_mark
            ) from None


def _path_part(parent: Node | None, index: Any) -> str:
    if isinstance(parent, SequenceNode) and isinstance(index, int):
        return f"[{index}]"
    if isinstance(parent, MappingNode) and isinstance(index, ScalarNode):
        return str(index.value)
    return "?"  # a mapping key, or the document root


def _join_path(parts: list[str]) -> str:
    text = ""
    for part in parts:
        text += part if part.startswith("[") or not text else f".{part}"
    return text or "(top level)"


def load_yaml(text: str) -> tuple[Any, list[str]]:
    """Parse one YAML document within the limits above; return the data and the duplicate-key
    problems. Raises yaml.YAMLError (with a position where PyYAML knows one)."""
    loader = _LimitedLoader(text)
    try:
        data = loader.get_single_data()
    except RecursionError:
        raise ComposerError(
            None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", None
        ) from None
    finally:
        loader.dispose()
    return data, loader.duplicates


def yaml_error_message(exc: yaml.YAMLError, text: str) -> str:
    """One line for a YAML error: position (when known) and what is wrong."""
    if isinstance(exc, yaml.reader.ReaderError):
        where = _line_col(text, exc.position) if isinstance(exc.position, int) else ""
        char = exc.character
        code = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        return f"{where}: character {code} is not allowed in YAML (a control character)"
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(exc, "context", None)
    problem = getattr(exc, "problem", None) or "invalid YAML"
    message = f"{context}: {problem}" if context and problem != "invalid YAML" else problem
    return f"{where}: {message}" if where else message


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
        out[key] = _read_secret_file(file_key, path)
    return out


def _read_secret_file(file_key: str, path: str) -> str:
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ValueError(f"{file_key}: cannot read {path}: {reason}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ValueError(
            f"{file_key}: {path} is larger than {MAX_SECRET_FILE_BYTES // 1024} KiB; "
            "it should hold only the secret"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # The position is left out on purpose: the bytes around it are part of the secret.
        raise ValueError(f"{file_key}: {path} is not valid UTF-8 text") from None
    # Secret files conventionally end with a newline; it is never part of the secret.
    return text.rstrip("\r\n")
