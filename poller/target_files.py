"""Targets from Prometheus file_sd-style files, so an existing inventory can be reused.

Each file (YAML or JSON) is a list of groups ``{targets: [host[:port], ...], labels: {...}}``.
Labels starting with ``__`` carry what hwpoller needs and Prometheus would drop anyway:
``__auth__`` (required), ``__protocol__`` (default snmp), ``__profile__``, ``__interval__``,
``__timeout__``. Every other label becomes a static label of each target in the group. A
target's name is its address. Files are read at start-up and on reload (SIGHUP).
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import yaml

from poller.config_values import MAX_CONFIG_BYTES, decode_config, load_yaml, yaml_error_message

_META = {
    "__auth__": "auth",
    "__protocol__": "protocol",
    "__profile__": "profile",
    "__interval__": "interval",
    "__timeout__": "timeout",
}


def _group_targets(group: Any, where: str, problems: list[str]) -> list[dict[str, Any]]:
    if not isinstance(group, dict):
        problems.append(f"{where}: a group must be a mapping with targets and labels")
        return []
    unknown = set(group) - {"targets", "labels"}
    if unknown:
        problems.append(f"{where}.{sorted(unknown)[0]}: unknown key")
    addresses = group.get("targets")
    labels = group.get("labels") or {}
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        problems.append(f"{where}.targets: must be a list of host[:port] strings")
        return []
    if not isinstance(labels, dict):
        problems.append(f"{where}.labels: must be a mapping")
        return []
    if "__auth__" not in labels:
        problems.append(f"{where}.labels.__auth__: missing: name the auth to use")
        return []
    meta = {_META[k]: v for k, v in labels.items() if k in _META}
    meta.setdefault("protocol", "snmp")
    for key in labels:
        if key.startswith("__") and key not in _META:
            problems.append(f"{where}.labels.{key}: unknown hwpoller label")
    static = {k: str(v) for k, v in labels.items() if not k.startswith("__")}
    return [{"name": a, "address": a, **meta, "labels": static} for a in addresses]


def read_target_files(patterns: list[str], base: Path, problems: list[str]) -> list[dict[str, Any]]:
    """Target dicts (config `targets:` shape) from every file matching the patterns."""
    targets: list[dict[str, Any]] = []
    for i, pattern in enumerate(patterns):
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        paths = sorted(glob.glob(full))
        if not paths and not glob.has_magic(pattern):
            problems.append(f"settings.target_files[{i}]: {full} does not exist")
        for path in paths:
            # YAML is a superset of JSON, so one parser reads both formats; the config's own
            # reader applies the same limits (size, encoding, nesting, aliases, duplicates).
            try:
                with open(path, "rb") as handle:
                    data = handle.read(MAX_CONFIG_BYTES + 1)
            except OSError as exc:
                problems.append(f"{path}: cannot read target file: {exc.strerror or exc}")
                continue
            try:
                text = decode_config(data)
            except ValueError as exc:
                problems.append(f"{path}: cannot read target file: {exc}")
                continue
            try:
                loaded, duplicates = load_yaml(text)
            except yaml.YAMLError as exc:
                problems.append(f"{path}: cannot read target file: {yaml_error_message(exc, text)}")
                continue
            problems.extend(f"{path}: {d}" for d in duplicates)
            groups = loaded or []
            if not isinstance(groups, list):
                problems.append(f"{path}: must be a list of target groups")
                continue
            for j, group in enumerate(groups):
                targets.extend(_group_targets(group, f"{path}: [{j}]", problems))
    return targets
