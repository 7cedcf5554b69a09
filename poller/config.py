"""YAML configuration -> validated, frozen config objects; every problem reported at once."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, cast

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)

from poller import protocols
from poller.cluster.settings import ClusterSettings
from poller.config_values import (
    MAX_CONFIG_BYTES,
    MAX_NAME,
    Name,
    StrictModel,
    decode_config,
    expand_env,
    load_yaml,
    parse_duration,
    parse_listen_address,
    split_address,
    yaml_error_message,
)
from poller.errors import ConfigError
from poller.target_files import read_target_files

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$"
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Every static label is copied onto every series of its target, so it costs memory in hwpoller
# and in Prometheus for each sample: keep them to what a site/room/rack description needs.
MAX_LABELS = 32
MAX_LABEL_NAME = 64
MAX_LABEL_VALUE = 256
# Labels hwpoller sets itself; a static label of the same name would collide.
RESERVED_LABELS = frozenset(
    {
        "device",
        "sensor",
        "location",
        "limit_type",
        "hw_type",
        "state",
        "source",
        "protocol",
        "reason",
        "vendor",
        "model",
        "firmware",
        "profile",
        "version",
        "job",
        "instance",
    }
)


def _within(low: float, high: float, why: str) -> Callable[[float], float]:
    """An after-validator keeping a duration in [low, high] seconds, saying why if not."""

    def check(value: float) -> float:
        if not low <= value <= high:  # also false for NaN
            raise ValueError(f"must be between {low:g}s and {high:g}s {why} (got {value:g}s)")
        return value

    return check


# Polling faster than once a second only loads fragile management cards; a day is the longest
# interval (and timeout) that still makes a useful health signal.
Interval = Annotated[
    float,
    BeforeValidator(parse_duration),
    AfterValidator(_within(1, 86400, "(polling faster than 1s overloads devices)")),
]
# Below 100 ms no device answers, even on the same LAN; the upper bound is the interval's.
Timeout = Annotated[
    float,
    BeforeValidator(parse_duration),
    AfterValidator(_within(0.1, 86400, "(no device answers in less than 100ms)")),
]
Backoff = Annotated[
    float, BeforeValidator(parse_duration), AfterValidator(_within(1, 86400, "(1s to 1 day)"))
]


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """Static labels must be valid Prometheus names, not hwpoller's own, and short."""
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels per target (got {len(labels)})")
    problems = []  # every bad label at once, not one per check-config run
    for key, value in labels.items():
        shown = key if len(key) <= MAX_LABEL_NAME else key[:MAX_LABEL_NAME] + "..."
        if len(key) > MAX_LABEL_NAME:
            problems.append(f"label name {shown!r} is longer than {MAX_LABEL_NAME} characters")
        elif not _LABEL_RE.match(key) or key.startswith("__"):
            problems.append(
                f"label name {key!r} is not a valid Prometheus label name (letters, digits "
                "and _, not starting with a digit or __)"
            )
        elif key in RESERVED_LABELS:
            problems.append(f"label name {key!r} is reserved for hwpoller's own labels")
        if len(value) > MAX_LABEL_VALUE:
            problems.append(
                f"label {shown!r}: the value is {len(value)} characters long; "
                f"at most {MAX_LABEL_VALUE} are allowed"
            )
    if problems:
        raise ValueError("; ".join(problems))
    return labels


class SensorLabelRule(StrictModel):
    """Labels for the sensors whose name matches: a leak rope under rack B wired to a
    monitor in rack A says so in its name, and its series then carry rack="B"."""

    match: Annotated[str, Field(max_length=500)]
    labels: dict[str, str] = Field(min_length=1)

    @field_validator("match")
    @classmethod
    def _match(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None
        return pattern

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        return check_labels(labels)


class TargetBase(StrictModel):
    """One device to poll: the keys every protocol has. Each protocol adds its own
    (ProtocolSpec.target_fields) in Target, built from the registry below."""

    name: str = Field(pattern=_NAME_RE, max_length=MAX_NAME)
    # Before address: the address syntax is the protocol's (a URL for some).
    protocol: str  # one of the registered protocols (a Literal in Target)
    address: Annotated[str, Field(max_length=300)]  # a 253-character host name and a port
    auth: Name
    profile: Name | None = None
    interval: Interval | None = None
    timeout: Timeout | None = None
    retries: int | None = Field(default=None, ge=0, le=10)
    labels: dict[str, str] = Field(default_factory=dict)

    sensor_labels: list[SensorLabelRule] = Field(default_factory=list, max_length=200)

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        return check_labels(labels)

    def sensor_label_rules(self) -> tuple[tuple[re.Pattern[str], tuple[tuple[str, str], ...]], ...]:
        """The sensor_labels rules, compiled, in order (the first match applies)."""
        return tuple(
            (re.compile(rule.match), tuple(sorted(rule.labels.items())))
            for rule in self.sensor_labels
        )

    @field_validator("address")
    @classmethod
    def _address(cls, address: str, info: ValidationInfo) -> str:
        protocol = info.data.get("protocol")
        parse = protocols.get(protocol).parse_address if protocol in protocols.names() else None
        (parse or split_address)(address, 0)
        return address

    def protocol_key(self, key: str) -> object:
        """The value of one of the protocol's own keys (ProtocolSpec.target_fields)."""
        return getattr(self, key)


class SettingsBase(StrictModel):
    """Process-wide settings and per-target defaults every protocol shares. Each protocol
    adds its own (ProtocolSpec.settings_fields) in Settings, built from the registry."""

    listen_address: str = "0.0.0.0:9730"
    # UDP address of the SNMP notification receiver (poller.snmp.notifications): a trap or inform
    # from a target re-polls it at once. None or "" turns the receiver off.
    notification_address: Annotated[
        str | None, AfterValidator(lambda a: a and (parse_listen_address(a, 9162), a)[1])
    ] = "0.0.0.0:9162"
    interval: Interval = 30.0
    timeout: Timeout | None = None  # default: 0.8 x interval
    retries: int = Field(default=1, ge=0, le=10)
    jitter: float = Field(default=0.1, ge=0, le=0.5)
    max_backoff: Backoff = 300.0
    profile_dirs: list[str] = Field(default_factory=list)
    target_files: list[str] = Field(default_factory=list)  # file_sd-style target lists
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("listen_address")
    @classmethod
    def _listen(cls, address: str) -> str:
        parse_listen_address(address, 9730)
        return address

    def protocol_key(self, key: str) -> object:
        """The value of one of a protocol's own settings (ProtocolSpec.settings_fields)."""
        return getattr(self, key)

    def is_set(self, key: str) -> bool:
        """Whether the key was written in the config rather than defaulted."""
        return key in self.model_fields_set


def _protocol_fields(kind: str) -> dict[str, Any]:
    """The keys the registered protocols add to targets or settings; two protocols may share
    a settings key only when they define it alike."""
    fields: dict[str, Any] = {}
    for record in protocols.protocols():
        own = record.target_fields if kind == "target" else record.settings_fields
        for key, definition in own.items():
            if key in fields and fields[key] != definition:  # pragma: no cover - a wiring bug
                raise TypeError(f"{record.name} redefines the {kind} key {key!r}")
            fields[key] = definition
    return fields


def _target_model() -> type[TargetBase]:
    # Literal["snmp", "ipmi", ...]: the error for a wrong one names every choice.
    choices: Any = cast(Any, Literal)[protocols.names()]
    model: type[TargetBase] = create_model(
        "Target",
        __base__=TargetBase,
        __doc__=TargetBase.__doc__,
        protocol=(choices, ...),
        **_protocol_fields("target"),
    )
    return model


def _settings_model() -> type[SettingsBase]:
    model: type[SettingsBase] = create_model(
        "Settings",
        __base__=SettingsBase,
        __doc__=SettingsBase.__doc__,
        **_protocol_fields("settings"),
    )
    return model


# Annotated as the base classes for the type checker; at run time the models hold every
# registered protocol's keys and the auth union every protocol's credentials.
if TYPE_CHECKING:
    Target = TargetBase
    Settings = SettingsBase
    Auth = BaseModel
else:
    Target = _target_model()
    Settings = _settings_model()
    Auth = Annotated[
        Union[tuple(p.auth_model for p in protocols.protocols())],  # noqa: UP007
        Field(discriminator="protocol"),
    ]


class Config(StrictModel):
    """The whole validated configuration."""

    settings: Settings = Field(default_factory=Settings)
    auths: dict[Name, Auth] = Field(default_factory=dict)
    targets: list[Target] = Field(default_factory=list)
    # Optional: members sharing the targets through etcd (docs/cluster.md). None: standalone.
    cluster: ClusterSettings | None = None
    source: str = ""  # the file it came from, for messages

    def auth_for(self, target: TargetBase) -> BaseModel:
        """Return the credentials a target refers to."""
        return self.auths[target.auth]

    def interval_for(self, target: TargetBase) -> float:
        """Polling interval of a target in seconds."""
        return target.interval or self.settings.interval

    def timeout_for(self, target: TargetBase) -> float:
        """Outer deadline of one poll of a target in seconds."""
        explicit = target.timeout or self.settings.timeout
        return explicit if explicit else 0.8 * self.interval_for(target)

    def retries_for(self, target: TargetBase) -> int:
        """How many times a timed-out request is re-sent."""
        return self.settings.retries if target.retries is None else target.retries


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "missing required key",
}


def _format_loc(loc: tuple[int | str, ...], raw: Any) -> str:
    """Render a pydantic error location as a key path, naming list items by their name."""
    parts: list[str] = []
    node = raw
    for i, item in enumerate(loc):
        # Discriminated unions insert the tag (the protocol) into the path: skip it.
        if i == 2 and loc[0] == "auths" and item in protocols.names():
            continue
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node):
                node = node[item]
                if isinstance(node, dict) and isinstance(node.get("name"), str):
                    label += f" ({node['name']})"
            parts.append(label)
            continue
        parts.append(f".{item}" if parts else str(item))
        node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"


def _format_validation(exc: ValidationError, raw: Any) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        msg = _MESSAGES.get(err["type"], err["msg"])
        msg = msg.removeprefix("Value error, ")
        problems.append(f"{_format_loc(err['loc'], raw)}: {msg}")
    return problems


def _cross_check(raw: dict[str, Any]) -> list[str]:
    """References between sections, checked on the raw data so they are reported even when
    other keys fail validation."""
    problems: list[str] = []
    auths: dict[str, Any] = raw["auths"] if isinstance(raw.get("auths"), dict) else {}
    targets: list[Any] = raw["targets"] if isinstance(raw.get("targets"), list) else []
    seen: dict[str, int] = {}
    for i, target in enumerate(targets):
        if not isinstance(target, dict):
            continue
        name = target.get("name")
        where = f"targets[{i}]" + (f" ({name})" if isinstance(name, str) else "")
        if isinstance(name, str):
            if name in seen:
                problems.append(f"{where}.name: duplicate target name (also targets[{seen[name]}])")
            seen.setdefault(name, i)
        own = protocols.by_name().get(str(target.get("protocol")))
        for record in protocols.protocols():
            if own is None or record is own:
                continue
            for key in record.target_fields:
                if key in target and key not in own.target_fields:
                    problems.append(
                        f"{where}.{key}: applies to {record.name} targets only, this one's "
                        f"protocol is {own.name}"
                    )
        ref = target.get("auth")
        if isinstance(ref, str):
            auth = auths.get(ref)
            if auth is None:
                defined = ", ".join(sorted(map(str, auths))) or "none"
                problems.append(
                    f"{where}.auth: {ref!r} is not defined in auths (defined: {defined})"
                )
            elif isinstance(auth, dict) and auth.get("protocol") != target.get("protocol"):
                problems.append(
                    f"{where}.auth: {ref!r} is {auth.get('protocol')} credentials, "
                    f"but the target's protocol is {target.get('protocol')}"
                )
    return problems


def _check_timing(config: Config) -> list[str]:
    problems = []
    for i, target in enumerate(config.targets):
        interval = config.interval_for(target)
        if config.timeout_for(target) > interval:
            problems.append(
                f"targets[{i}] ({target.name}).timeout: must not be longer than the interval "
                f"({interval:g}s)"
            )
    return problems


def parse_config(text: str, source: str = "<config>") -> Config:
    """Validate YAML text; raise ConfigError listing every problem with its key path."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{source}: the config is longer than {MAX_CONFIG_BYTES} characters"])
    try:
        raw, problems = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: {yaml_error_message(exc, text)}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            [f"{source}: the top level must be a mapping with settings/auths/targets"]
        )
    if "source" in raw:
        problems.append("source: unknown key")
    expanded = expand_env(raw, "", problems)
    settings = expanded.get("settings")
    patterns = settings.get("target_files") if isinstance(settings, dict) else None
    if isinstance(patterns, list) and all(isinstance(p, str) for p in patterns):
        base = Path(source).parent if Path(source).exists() else Path.cwd()
        extra = read_target_files(patterns, base, problems)
        listed = expanded.get("targets")
        expanded["targets"] = (listed if isinstance(listed, list) else []) + extra
    config: Config | None = None
    try:
        config = Config.model_validate({**expanded, "source": source})
    except ValidationError as exc:
        problems.extend(_format_validation(exc, expanded))
    problems.extend(_cross_check(expanded))
    if config is not None:
        problems.extend(_check_timing(config))
    if problems:
        raise ConfigError([f"{source}: {p}" for p in problems])
    assert config is not None  # noqa: S101 - no problems means validation succeeded
    return config


def load_config(path: str | Path) -> Config:
    """Read and validate a config file."""
    try:
        with Path(path).open("rb") as handle:
            # One byte more than allowed tells a file at the limit from a larger one without
            # reading (say) a multi-gigabyte log file given by mistake.
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([f"{path}: cannot read config file: {reason}"]) from None
    try:
        text = decode_config(data)
    except ValueError as exc:
        raise ConfigError([f"{path}: {exc}"]) from None
    return parse_config(text, str(path))


def check_profiles(config: Config, known: Mapping[str, str]) -> None:
    """Raise ConfigError when a target names a profile that does not exist, or one for
    another protocol; `known` maps profile names to their protocol."""
    problems = []
    for i, target in enumerate(config.targets):
        where = f"{config.source}: targets[{i}] ({target.name}).profile"
        if target.profile is None:
            continue
        kind = known.get(target.profile)
        if kind is None:
            problems.append(
                f"{where}: no profile named {target.profile!r} (see `hwpoller profiles`)"
            )
        elif kind != target.protocol:
            problems.append(f"{where}: {target.profile!r} is a {kind} profile")
    if problems:
        raise ConfigError(problems)
