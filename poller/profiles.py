"""Device profiles as data: load mibs/*.yaml (and user profile directories) for every protocol.

Every profile file shares a header: `name`, `protocol` (snmp when left out), `description`,
`include` (profiles whose content applies too, resolved here, at load time, for every
protocol) and usually `match`. The rest of the file is the protocol's own (see
ProtocolSpec.profile_model); the protocol's compile_profile turns it into what its drivers
use. docs/profiles.md describes the formats.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from poller import protocols
from poller.errors import ProfileError

__all__ = [
    "BUILTIN_PROFILE_DIR",
    "LoadedBase",
    "LoadedProfile",
    "ProfileSet",
    "load_profiles",
]

P = TypeVar("P")


def _builtin_profile_dir() -> Path:
    """mibs/ at the top of a source checkout, or poller/mibs/ where a wheel installs it."""
    here = Path(__file__).resolve().parent
    source = here.parent / "mibs"
    return source if (source / "rfc1628-ups.yaml").exists() else here / "mibs"


BUILTIN_PROFILE_DIR = _builtin_profile_dir()


class LoadedProfile(Protocol):
    """A profile ready for use, whatever its protocol."""

    @property
    def name(self) -> str:
        """The profile's name, as used in a target's `profile:`."""
        ...

    @property
    def protocol(self) -> str:
        """The protocol whose targets it applies to."""
        ...

    @property
    def description(self) -> str:
        """One line for `hwpoller profiles`."""
        ...

    @property
    def source(self) -> str:
        """The file it was read from."""
        ...

    @property
    def included(self) -> frozenset[str]:
        """Every profile it includes, directly or through nested includes."""
        ...

    @property
    def spec(self) -> BaseModel:
        """The validated profile file."""
        ...


class ProfileFile(Protocol):
    """The header keys every protocol's profile model has."""

    @property
    def name(self) -> str: ...

    @property
    def protocol(self) -> str: ...

    @property
    def description(self) -> str: ...


class LoadedBase:
    """name, protocol and description of a loaded profile, read from its validated file.
    Each protocol's loaded-profile dataclass derives from it and declares `spec`."""

    spec: ProfileFile

    @property
    def name(self) -> str:
        """The profile's name, as used in a target's `profile:`."""
        return self.spec.name

    @property
    def protocol(self) -> str:
        """The protocol whose targets it applies to."""
        return self.spec.protocol

    @property
    def description(self) -> str:
        """One line for `hwpoller profiles`."""
        return self.spec.description


class _Header(BaseModel):
    """The keys every profile file has, read first to route it to its protocol's model."""

    model_config = {"extra": "ignore"}

    name: str = ""
    protocol: str = "snmp"
    include: list[str] = []
    # Profiles whose readings of the same kind this one's replace (protocols that merge
    # several profiles per device); each must exist.
    supersedes: list[str] = []


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{source}: {loc or '(top level)'}: {msg.removeprefix('Value error, ')}")
    return "\n".join(lines)


class ProfileSet:
    """All profiles known to the process, by name."""

    def __init__(self, profiles: Mapping[str, LoadedProfile]) -> None:
        self._all = dict(profiles)

    @property
    def names(self) -> frozenset[str]:
        """Names of every loaded profile."""
        return frozenset(self._all)

    def get(self, name: str) -> LoadedProfile:
        """Return a profile by name (KeyError if absent)."""
        return self._all[name]

    def typed(self, name: str, kind: type[P]) -> P:
        """A profile by name as its protocol's type (KeyError if absent or of another)."""
        profile = self._all[name]
        if not isinstance(profile, kind):
            raise KeyError(name)
        return profile

    def of_protocol(self, protocol: str) -> list[LoadedProfile]:
        """Profiles of one protocol, sorted by name."""
        return [p for _, p in sorted(self._all.items()) if p.protocol == protocol]

    def of_type(self, kind: type[P]) -> list[P]:
        """Profiles of one loaded type (one protocol's), sorted by name."""
        return [p for _, p in sorted(self._all.items()) if isinstance(p, kind)]

    def fingerprint(self, protocol: str) -> tuple[tuple[str, BaseModel], ...]:
        """What a reload compares to tell whether one protocol's profiles changed."""
        return tuple((p.name, p.spec) for p in self.of_protocol(protocol))


def _read(path: Path, problems: list[str]) -> tuple[BaseModel, _Header] | None:
    """One profile file validated by its protocol's model, or None (problem noted)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problems.append(f"{path}: cannot read profile: {exc}")
        return None
    if not isinstance(raw, dict):
        problems.append(f"{path}: a profile must be a mapping")
        return None
    try:
        header = _Header.model_validate(raw)
    except ValidationError as exc:
        problems.append(_format_errors(str(path), exc))
        return None
    known = protocols.by_name()
    if header.protocol not in known:
        choices = ", ".join(known)
        problems.append(
            f"{path}: protocol: unknown protocol {raw.get('protocol')!r} (one of {choices})"
        )
        return None
    try:
        spec = known[header.protocol].profile_model.model_validate(raw)
    except ValidationError as exc:
        problems.append(_format_errors(str(path), exc))
        return None
    return spec, header


_Specs = Mapping[str, tuple[BaseModel, _Header, str]]


def _includes(name: str, specs: _Specs, chain: tuple[str, ...]) -> list[str]:
    """Every profile `name` includes, depth first, each once; ProfileError on a loop, a
    missing profile or one of another protocol."""
    order: list[str] = []
    protocol = specs[name][1].protocol
    for included in specs[name][1].include:
        if included in chain or included == name:
            raise ProfileError(f"include loop: {' -> '.join([*chain, name, included])}")
        if included not in specs:
            raise ProfileError(f"include: no profile named {included!r}")
        other = specs[included][1].protocol
        if other != protocol:
            raise ProfileError(f"include: {included!r} is a {other} profile, not {protocol}")
        for found in [included, *_includes(included, specs, (*chain, name))]:
            if found not in order:
                order.append(found)
    return order


def load_profiles(dirs: Iterable[str | Path] = ()) -> ProfileSet:
    """Load the built-in profiles and those in `dirs`; later directories override by name.

    Every problem of every file is reported at once, as one ProfileError.
    """
    specs: dict[str, tuple[BaseModel, _Header, str]] = {}  # name -> spec, header, source
    problems: list[str] = []
    for directory in [BUILTIN_PROFILE_DIR, *map(Path, dirs)]:
        if not directory.is_dir():
            problems.append(f"{directory}: profile directory does not exist")
            continue
        for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
            read = _read(path, problems)
            if read is not None:
                specs[read[1].name] = (read[0], read[1], str(path))
    loaded: dict[str, LoadedProfile] = {}
    known = protocols.by_name()
    for name, (spec, header, source) in specs.items():
        missing = [n for n in header.supersedes if n not in specs]
        if missing:
            problems.append(f"{source}: supersedes: no profile named {missing[0]!r}")
            continue
        try:
            order = _includes(name, specs, ())
            loaded[name] = known[header.protocol].compile_profile(
                spec, source, [specs[n][0] for n in order]
            )
        except ProfileError as exc:
            problems.append(f"{source}: {exc}")
        except ValueError as exc:
            problems.append(f"{source}: {exc}")
    if problems:
        raise ProfileError("\n".join(problems))
    return ProfileSet(loaded)
