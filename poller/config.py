"""YAML configuration -> validated, frozen config objects; every problem reported at once."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from poller.config_values import (
    MAX_CONFIG_BYTES,
    decode_config,
    expand_env,
    load_yaml,
    parse_duration,
    parse_listen_address,
    read_secret_files,
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
MAX_NAME = 128  # target, auth and profile names appear in every log line and series
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
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]

_V3_ONLY = (
    "username",
    "security_level",
    "auth_protocol",
    "auth_password",
    "auth_password_file",
    "priv_protocol",
    "priv_password",
    "priv_password_file",
    "allow_insecure_protocols",
)
_V12_ONLY = ("community", "community_file")


def _snmp_version(value: Any) -> Any:
    """The SNMP version as "1", "2c" or "3"; YAML's unquoted 1 and 3 are accepted as such."""
    # bool is an int in Python: `version: true` must not silently mean version 1.
    if isinstance(value, int) and not isinstance(value, bool) and value in (1, 3):
        return str(value)
    if isinstance(value, str) and value.strip() in ("1", "2c", "3"):
        return value.strip()
    if isinstance(value, bool):
        raise ValueError(  # noqa: TRY004 - a ValueError is what pydantic reports with the path
            f"version must be 1, 2c or 3, got {str(value).lower()} (YAML reads unquoted "
            "true/false/yes/no/on/off as booleans)"
        )
    hint = " (write 2c for SNMPv2c)" if value in (2, "2", 2.0) else ""
    raise ValueError(f"version must be 1, 2c or 3, got {value!r}{hint}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class SnmpAuth(_Strict):
    """Named SNMP credentials (v1/v2c community or SNMPv3 USM user)."""

    protocol: Literal["snmp"]
    version: Annotated[Literal["1", "2c", "3"], BeforeValidator(_snmp_version)] = "2c"
    community: SecretStr | None = None
    username: Name | None = None
    security_level: Literal["noAuthNoPriv", "authNoPriv", "authPriv"] | None = None
    auth_protocol: Literal["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"] | None = None
    auth_password: SecretStr | None = None
    priv_protocol: Literal["DES", "AES", "AES192", "AES256"] | None = None
    priv_password: SecretStr | None = None
    # MD5 and DES are broken; they work only when the operator says so explicitly.
    allow_insecure_protocols: bool = False

    @model_validator(mode="before")
    @classmethod
    def _files(cls, data: Any) -> Any:
        if isinstance(data, dict):
            # Keys of another version are refused before any secret file is read for them.
            try:
                version = _snmp_version(data.get("version", "2c"))
            except ValueError:
                version = None  # reported by the field validator
            other = _V3_ONLY if version in ("1", "2c") else _V12_ONLY if version == "3" else ()
            given = [k for k in other if k in data]
            if given:
                verb = "does" if len(given) == 1 else "do"
                why = "only version 3 has users" if version != "3" else "version 3 has users"
                raise ValueError(
                    f"{', '.join(given)} {verb} not apply to SNMP version {version} ({why})"
                )
        return read_secret_files(data, ("community", "auth_password", "priv_password"))

    @model_validator(mode="after")
    def _consistent(self) -> SnmpAuth:
        if self.version in ("1", "2c"):
            if self.community is None:
                raise ValueError(f"SNMP v{self.version} needs community (or community_file)")
            return self
        if not self.username:
            raise ValueError("SNMP version 3 needs username")
        level = self.security_level or "authPriv"
        needs_auth = level in ("authNoPriv", "authPriv")
        if needs_auth and (self.auth_protocol is None or self.auth_password is None):
            raise ValueError(f"security_level {level} needs auth_protocol and auth_password")
        if level == "authPriv" and (self.priv_protocol is None or self.priv_password is None):
            raise ValueError("security_level authPriv needs priv_protocol and priv_password")
        for key in ("auth_password", "priv_password"):
            secret = getattr(self, key)
            if secret is not None and len(secret.get_secret_value()) < 8:
                raise ValueError(f"{key} must be at least 8 characters (RFC 3414)")
        weak = [p for p in (self.auth_protocol, self.priv_protocol) if p in ("MD5", "DES")]
        if weak and not self.allow_insecure_protocols:
            raise ValueError(
                f"{' and '.join(weak)} are insecure; use SHA256 and AES, or set "
                "allow_insecure_protocols: true"
            )
        return self

    @property
    def effective_security_level(self) -> str:
        """The v3 security level, authPriv when left out."""
        return self.security_level or "authPriv"


class IpmiAuth(_Strict):
    """Named IPMI (RMCP+) credentials."""

    protocol: Literal["ipmi"]
    username: Annotated[str, Field(max_length=MAX_NAME)] = ""
    password: SecretStr | None = None
    privilege: Literal["callback", "user", "operator", "administrator"] = "user"
    # The BMC key (K_g) for RMCP+ two-key login, when the BMC has one set.
    kg: SecretStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _files(cls, data: Any) -> Any:
        return read_secret_files(data, ("password", "kg"))


Auth = Annotated[SnmpAuth | IpmiAuth, Field(discriminator="protocol")]


class IpmiOptions(_Strict):
    """Per-target opt-ins to IPMI modes the security defaults refuse."""

    # pyghmi never proposes cipher suite 0 (no authentication), so this only documents intent.
    allow_cipher_suite_0: bool = False
    allow_ipmi_v1_5: bool = False
    allow_anonymous: bool = False


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


class SensorLabelRule(_Strict):
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


class Target(_Strict):
    """One device to poll."""

    name: str = Field(pattern=_NAME_RE, max_length=MAX_NAME)
    address: Annotated[str, Field(max_length=300)]  # a 253-character host name and a port
    protocol: Literal["snmp", "ipmi"]
    auth: Name
    profile: Name | None = None
    interval: Interval | None = None
    timeout: Timeout | None = None
    retries: int | None = Field(default=None, ge=0, le=10)
    max_repetitions: int | None = Field(default=None, ge=1, le=100)
    labels: dict[str, str] = Field(default_factory=dict)
    ipmi: IpmiOptions = Field(default_factory=IpmiOptions)

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
    def _address(cls, address: str) -> str:
        split_address(address, 0)
        return address


class Settings(_Strict):
    """Process-wide settings and per-target defaults."""

    listen_address: str = "0.0.0.0:9730"
    # UDP address of the SNMP notification receiver (poller.notifications): a trap or inform
    # from a target re-polls it at once. None or "" turns the receiver off.
    notification_address: Annotated[
        str | None, AfterValidator(lambda a: a and (parse_listen_address(a, 9162), a)[1])
    ] = "0.0.0.0:9162"
    interval: Interval = 30.0
    timeout: Timeout | None = None  # default: 0.8 x interval
    retries: int = Field(default=1, ge=0, le=10)
    max_repetitions: int = Field(default=10, ge=1, le=100)
    jitter: float = Field(default=0.1, ge=0, le=0.5)
    max_backoff: Backoff = 300.0
    snmp_concurrency: int = Field(default=256, ge=1, le=65536)
    # Each is an OS thread blocked in pyghmi; thousands would only exhaust memory.
    ipmi_threads: int = Field(default=32, ge=1, le=1024)
    profile_dirs: list[str] = Field(default_factory=list)
    target_files: list[str] = Field(default_factory=list)  # file_sd-style target lists
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("listen_address")
    @classmethod
    def _listen(cls, address: str) -> str:
        parse_listen_address(address, 9730)
        return address


class Config(_Strict):
    """The whole validated configuration."""

    settings: Settings = Field(default_factory=Settings)
    auths: dict[Name, Auth] = Field(default_factory=dict)
    targets: list[Target] = Field(default_factory=list)
    source: str = ""  # the file it came from, for messages

    def auth_for(self, target: Target) -> SnmpAuth | IpmiAuth:
        """Return the credentials a target refers to."""
        return self.auths[target.auth]

    def interval_for(self, target: Target) -> float:
        """Polling interval of a target in seconds."""
        return target.interval or self.settings.interval

    def timeout_for(self, target: Target) -> float:
        """Outer deadline of one poll of a target in seconds."""
        explicit = target.timeout or self.settings.timeout
        return explicit if explicit else 0.8 * self.interval_for(target)

    def retries_for(self, target: Target) -> int:
        """How many times a timed-out request is re-sent."""
        return self.settings.retries if target.retries is None else target.retries

    def max_repetitions_for(self, target: Target) -> int:
        """GETBULK max-repetitions for a target."""
        return target.max_repetitions or self.settings.max_repetitions


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "missing required key",
}


def _format_loc(loc: tuple[int | str, ...], raw: Any) -> str:
    """Render a pydantic error location as a key path, naming list items by their name."""
    parts: list[str] = []
    node = raw
    for i, item in enumerate(loc):
        # Discriminated unions insert the tag ("snmp"/"ipmi") into the path: skip it.
        if i == 2 and loc[0] == "auths" and item in ("snmp", "ipmi"):
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
