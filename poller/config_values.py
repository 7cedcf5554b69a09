"""Parsers for configuration values: the YAML reader and its limits, durations, addresses,
${ENV} and *_file secrets."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

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


class _CheckedConstructor(SafeConstructor):
    """PyYAML's safe constructor, with every value error reported as a YAML error."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # noqa: BLE001 - PyYAML's constructors let the data's faults
            # escape as whatever they hit: a date such as 2024-02-30 (ValueError), `!!int abc`
            # (ValueError), `!!timestamp` on a non-date (AttributeError), ...
            raise ConstructorError(
                None, None, f"cannot read value {str(node.value)[:40]!r}: {exc}", node.start_mark
            ) from None


if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _Loader(CParser, _CheckedConstructor, Resolver):
        """libyaml scans, parses and composes (several times faster than PyYAML's Python
        code; an alias is a reference to the node it names, never a copy)."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _CheckedConstructor.__init__(self)
            Resolver.__init__(self)

else:  # pragma: no cover - PyYAML built without libyaml

    class _Loader(  # type: ignore[no-redef]
        Reader, Scanner, Parser, Composer, _CheckedConstructor, Resolver
    ):
        """PyYAML's pure-Python loader."""

        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)
            _CheckedConstructor.__init__(self)
            Resolver.__init__(self)


def _children(node: Node) -> list[tuple[Node, str]]:
    """A node's children, each with the key-path step that leads to it."""
    if isinstance(node, SequenceNode):
        return [(item, f"[{i}]") for i, item in enumerate(node.value)]
    if isinstance(node, MappingNode):
        out: list[tuple[Node, str]] = []
        for key, value in node.value:
            out.append((key, "?"))
            out.append((value, str(key.value) if isinstance(key, ScalarNode) else "?"))
        return out
    return []


def _join_path(parts: list[str]) -> str:
    text = ""
    for part in parts:
        text += part if part.startswith("[") or not text else f".{part}"
    return text or "(top level)"


def _duplicate_keys(node: MappingNode, path: list[str]) -> list[str]:
    problems = []
    seen: dict[tuple[str, str], int] = {}
    for key, _ in node.value:
        if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
            continue  # `<<: *base` merges on purpose; its keys may be overridden
        line = key.start_mark.line + 1
        first = seen.get((key.tag, key.value))
        if first is None:
            seen[(key.tag, key.value)] = line
            continue
        problems.append(
            f"{_join_path([*path, str(key.value)])}: duplicate key on line {line} "
            f"(first on line {first}); give each key once"
        )
    return problems


def _check_nodes(root: Node) -> list[str]:
    """Walk the composed document once, without expanding aliases: refuse deep nesting,
    recursive aliases and alias expansion past the budget; return duplicate-key problems.

    Iterative, so that no nesting depth can exhaust Python's stack."""
    duplicates: list[str] = []
    weights: dict[int, int] = {}  # id(node) -> node count with aliases expanded
    on_path: set[int] = {id(root)}
    aliased = 0
    root_children = _children(root)
    stack = [(root, root_children, iter(root_children))]
    path: list[str] = []  # key-path steps of stack[1:]
    if isinstance(root, MappingNode):
        duplicates.extend(_duplicate_keys(root, path))
    while stack:
        node, children, pending = stack[-1]
        step = next(pending, None)
        if step is None:
            stack.pop()
            if path:
                path.pop()
            on_path.discard(id(node))
            weights[id(node)] = 1 + sum(weights[id(child)] for child, _ in children)
            continue
        child, part = step
        mark: Any = child.start_mark
        if id(child) in on_path:
            raise ComposerError(
                None,
                None,
                "an alias is used inside the node it names (a recursive structure)",
                node.start_mark,
            )
        if id(child) in weights:  # seen before: this is an alias
            aliased += weights[id(child)]
            if aliased > MAX_ALIAS_NODES:
                raise ComposerError(
                    None,
                    None,
                    f"aliases (*name) expand to more than {MAX_ALIAS_NODES} values; "
                    "the file is too repetitive to be a configuration",
                    node.start_mark,
                )
            continue
        if len(stack) > MAX_YAML_DEPTH:
            raise ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", mark)
        on_path.add(id(child))
        path.append(part)
        grandchildren = _children(child)
        stack.append((child, grandchildren, iter(grandchildren)))
        if isinstance(child, MappingNode):
            duplicates.extend(_duplicate_keys(child, path))
    return duplicates


def load_yaml(text: str) -> tuple[Any, list[str]]:
    """Parse one YAML document within the limits above; return the data and the duplicate-key
    problems. Raises yaml.YAMLError (with a position where PyYAML knows one)."""
    try:
        loader = _Loader(text)
    except UnicodeEncodeError as exc:  # a lone surrogate, only possible in text from Python
        raise yaml.reader.ReaderError(
            "<text>", exc.start, ord(text[exc.start]), "utf-8", "not a character"
        ) from None
    try:
        root = loader.get_single_node()
        if root is None:
            return None, []
        duplicates = _check_nodes(root)
        return loader.construct_document(root), duplicates
    except RecursionError:  # only without libyaml, whose parser stops at 1000 levels
        raise ComposerError(
            None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", None
        ) from None
    finally:
        loader.dispose()


def yaml_error_message(exc: yaml.YAMLError, text: str) -> str:
    """One line for a YAML error: position (when known) and what is wrong."""
    if isinstance(exc, yaml.reader.ReaderError):
        where = _line_col(text, exc.position) if isinstance(exc.position, int) else ""
        char = exc.character
        code = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        return f"{where}: character {code} is not allowed in YAML"
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or "invalid YAML"
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        # e.g. "while parsing a flow sequence at line 3, did not find expected ',' or ']'"
        problem = f"{context} at line {context_mark.line + 1}, {problem}"
    elif context:
        problem = f"{context}: {problem}"
    return f"{where}: {problem}" if where else problem


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


MAX_NAME = 128  # target, auth and profile names appear in every log line and series
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are frozen, strings stripped."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
