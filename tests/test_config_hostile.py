"""Hostile or broken config files (issue 10): each is one clear error, never a traceback, a hang
or a silently wrong value."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from poller import app
from poller.cli import main
from poller.config import Config, load_config, parse_config
from poller.config_values import MAX_ALIAS_NODES, MAX_CONFIG_BYTES, MAX_SECRET_FILE_BYTES
from poller.errors import ConfigError

pytestmark = pytest.mark.fault  # hostile input

AUTH = "auths:\n  a: {protocol: snmp, community: c}\n"
TARGET = "targets:\n  - {name: t, address: h, protocol: snmp, auth: a}\n"


def billion_laughs(levels: int = 9) -> str:
    """The classic alias bomb: ~330 bytes that expand to 9**levels strings."""
    names = "abcdefghijklmnopqrstuvwxyz"
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join([f"*{names[i - 1]}"] * 9)
        lines.append(f"{names[i]}: &{names[i]} [{refs}]")
    return "\n".join(lines) + "\n"


def problems_of(text: str, source: str = "hw.yml") -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(text, source)
    return err.value.problems


def check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run `hwpoller check-config`; it must fail with a message and no traceback."""
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_alias_bomb_is_rejected_quickly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bomb = tmp_path / "bomb.yml"
    bomb.write_text(billion_laughs())
    assert len(bomb.read_bytes()) < 400
    started = time.perf_counter()
    err = check_config(bomb, capsys)
    elapsed = time.perf_counter() - started
    assert f"{bomb}: line 6, column " in err
    assert f"aliases (*name) expand to more than {MAX_ALIAS_NODES} values" in err
    assert elapsed < 1.0, f"took {elapsed:.2f}s"


def test_shared_anchors_within_budget_still_work() -> None:
    # Real configs share a labels block (or an auth through a merge key) between many targets.
    targets = "".join(
        f"  - {{name: t{i}, address: h{i}, protocol: snmp, auth: a, labels: *room}}\n"
        for i in range(1, 2000)
    )
    text = (
        "auths:\n  a: &base {protocol: snmp, community: c}\n  b: {<<: *base, community: d}\n"
        "targets:\n  - {name: t0, address: h0, protocol: snmp, auth: a, "
        f"labels: &room {{site: hq, room: r1, rack: A}}}}\n{targets}"
    )
    config = parse_config(text)
    assert len(config.targets) == 2000
    assert config.targets[1999].labels == {"site": "hq", "room": "r1", "rack": "A"}
    assert config.auths["b"].community.get_secret_value() == "d"  # type: ignore[union-attr]


def test_recursive_alias_is_an_error() -> None:
    problems = problems_of("settings: &s {profile_dirs: [*s]}\n")
    assert problems == [
        "hw.yml: line 1, column 29: an alias is used inside the node it names "
        "(a recursive structure)"
    ]


def test_file_size_is_capped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "big.yml"
    big.write_bytes(b"# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    started = time.perf_counter()
    err = check_config(big, capsys)
    assert f"{big}: the file is larger than 4 MiB" in err
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("site: café\n".encode("latin-1"), "line 1, column 10: not valid UTF-8 (byte 0xe9)"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)), "contains a NUL byte"),
        ("settings: {}\n".encode("utf-16"), "the file is UTF-16 encoded; save it as UTF-8"),
        ("settings: {}\n".encode("utf-16-le"), "the file looks UTF-16 encoded"),
        ("settings: {}\n".encode("utf-32"), "the file is UTF-32 encoded"),
        (b"settings:\n  interval: 30s\x07\n", "line 2, column 16: character U+0007 is not allowed"),
        (b"[" * 20000 + b"]" * 20000, "line 1, column 1001: while increasing flow level"),
        (b"[" * 100 + b"]" * 100, "line 1, column 66: nested more than 64 levels deep"),
        (
            b"a:\n" + b"".join(b" " * i + b"b:\n" for i in range(1, 2000)),
            "exceeded maximum nesting depth",
        ),
        (
            b"a:\n" + b"".join(b" " * i + b"b:\n" for i in range(1, 100)),
            "line 65, column 65: nested more than 64 levels deep",
        ),
        (b"settings: {interval: 2024-02-30}\n", "cannot read value '2024-02-30'"),
        (
            b"settings: {interval: !!timestamp soon}\n",
            "line 1, column 22: cannot read value 'soon'",
        ),
        (b"settings: !!python/object:os.system {}\n", "could not determine a constructor"),
        (b"targets: [1\n", "line 2, column 1"),
    ],
)
def test_unreadable_files_give_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "hw.yml"
    path.write_bytes(content)
    err = check_config(path, capsys)
    lines = err.strip().splitlines()
    assert lines[0] == "configuration error:"
    assert len(lines) == 2, err
    assert lines[1].startswith(f"{path}: ")
    assert message in lines[1]


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "hw.yml"
    path.write_bytes(b"\xef\xbb\xbf" + (AUTH + TARGET).encode())
    assert load_config(path).targets[0].name == "t"


def test_duplicate_keys_are_errors_with_their_path() -> None:
    text = (
        "settings:\n  interval: 30s\n  interval: 1m\n"
        "auths:\n  a: {protocol: snmp, community: c}\n  a: {protocol: snmp, community: d}\n"
        "targets:\n"
        "  - name: t\n    address: h\n    protocol: snmp\n    auth: a\n"
        "    labels: {site: x, site: y}\n"
        "  - {name: u, address: h, protocol: snmp, auth: nope}\n"
    )
    problems = problems_of(text)
    assert problems == [
        "hw.yml: settings.interval: duplicate key on line 3 (first on line 2); give each key once",
        "hw.yml: auths.a: duplicate key on line 6 (first on line 5); give each key once",
        "hw.yml: targets[0].labels.site: duplicate key on line 12 (first on line 12); "
        "give each key once",
        # Reported together with every other problem.
        "hw.yml: targets[1] (u).auth: 'nope' is not defined in auths (defined: a)",
    ]


def test_merge_keys_may_be_overridden() -> None:
    text = "auths:\n  a: &a {protocol: snmp, community: c}\n  b: {<<: *a, community: d}\n" + TARGET
    assert parse_config(text).auths["b"].community.get_secret_value() == "d"  # type: ignore[union-attr]


@pytest.mark.parametrize("version", ["5", "true", "false", "yes", "2", "'2'", "2.0", "v3", "null"])
def test_snmp_version_only_1_2c_3(version: str) -> None:
    problems = problems_of(f"auths:\n  a: {{protocol: snmp, version: {version}, community: c}}\n")
    assert len(problems) == 1
    assert problems[0].startswith("hw.yml: auths.a.version: version must be 1, 2c or 3, got ")


def test_yaml_booleans_are_named_as_such() -> None:
    problems = problems_of("auths:\n  a: {protocol: snmp, version: yes, community: c}\n")
    assert problems == [
        "hw.yml: auths.a.version: version must be 1, 2c or 3, got true (YAML reads unquoted "
        "true/false/yes/no/on/off as booleans)"
    ]


def test_every_bad_label_of_a_target_is_named() -> None:
    labels = "{device: x, 9lives: y, site: " + "z" * 300 + "}"
    text = (
        AUTH + f"targets:\n  - {{name: t, address: h, protocol: snmp, auth: a, labels: {labels}}}\n"
    )
    (problem,) = problems_of(text)
    assert "'device' is reserved" in problem
    assert "'9lives' is not a valid Prometheus label name" in problem
    assert "label 'site': the value is 300 characters long" in problem


@pytest.mark.parametrize(("version", "expected"), [("1", "1"), ("'1'", "1"), ("2c", "2c")])
def test_snmp_v1_v2c_spellings(version: str, expected: str) -> None:
    text = f"auths:\n  a: {{protocol: snmp, version: {version}, community: c}}\n"
    assert parse_config(text).auths["a"].version == expected  # type: ignore[union-attr]


def test_snmp_v3_as_unquoted_int() -> None:
    text = (
        "auths:\n  a: {protocol: snmp, version: 3, username: u, auth_protocol: SHA256, "
        "auth_password: abcdefgh, priv_protocol: AES, priv_password: abcdefgh}\n"
    )
    assert parse_config(text).auths["a"].version == "3"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (
            "{protocol: snmp, version: 2c, community: c, auth_password: abcdefgh}",
            "auth_password does not apply to SNMP version 2c",
        ),
        (
            "{protocol: snmp, version: 1, community: c, priv_password_file: /nonexistent, "
            "username: u}",
            "username, priv_password_file do not apply to SNMP version 1",
        ),
        (
            "{protocol: snmp, version: 3, username: u, community: c, auth_protocol: SHA256, "
            "auth_password: abcdefgh, priv_protocol: AES, priv_password: abcdefgh}",
            "community does not apply to SNMP version 3",
        ),
    ],
)
def test_keys_of_another_snmp_version_are_named(auth: str, message: str) -> None:
    problems = problems_of(f"auths:\n  a: {auth}\n")
    assert len(problems) == 1
    assert problems[0].startswith(f"hw.yml: auths.a: {message}")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("interval: 1ms", "settings.interval: must be between 1s and 86400s"),
        ("interval: 0.5", "settings.interval: must be between 1s and 86400s"),
        ("interval: .inf", "settings.interval: must be between 1s and 86400s"),
        ("interval: .nan", "settings.interval: must be between 1s and 86400s"),
        ("interval: 2h, timeout: 25h", "settings.timeout: must be between 0.1s and 86400s"),
        ("timeout: 0", "settings.timeout: must be between 0.1s and 86400s"),
        ("timeout: 50ms", "settings.timeout: must be between 0.1s and 86400s"),
        ("timeout: -1s", "settings.timeout: expected a duration"),
        ("max_backoff: 10ms", "settings.max_backoff: must be between 1s and 86400s"),
        ("ipmi_threads: 100000", "settings.ipmi_threads: Input should be less than or equal"),
    ],
)
def test_duration_bounds(settings: str, message: str) -> None:
    problems = problems_of(f"settings: {{{settings}}}\n")
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"hw.yml: {message}")


def test_timeout_at_most_interval_per_target() -> None:
    text = AUTH + "targets:\n  - {name: t, address: h, protocol: snmp, auth: a, interval: 1s, "
    problems = problems_of(text + "timeout: 2s}\n")
    assert problems == ["hw.yml: targets[0] (t).timeout: must not be longer than the interval (1s)"]
    config = parse_config(text + "timeout: 100ms}\n")
    assert config.timeout_for(config.targets[0]) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("{site: " + "x" * 1_000_000 + "}", "label 'site': the value is 1000000 characters long"),
        ("{" + "a" * 65 + ": x}", "is longer than 64 characters"),
        ("{1site: x}", "'1site' is not a valid Prometheus label name"),
        ("{__meta: x}", "'__meta' is not a valid Prometheus label name"),
        ("{rack-id: x}", "'rack-id' is not a valid Prometheus label name"),
        ("{sensor: x}", "'sensor' is reserved"),
        ("{location: x}", "'location' is reserved"),
        ("{instance: x}", "'instance' is reserved"),
        ("{" + ", ".join(f"l{i}: x" for i in range(33)) + "}", "at most 32 labels per target"),
    ],
)
def test_label_limits(labels: str, message: str) -> None:
    text = (
        AUTH + f"targets:\n  - {{name: t, address: h, protocol: snmp, auth: a, labels: {labels}}}\n"
    )
    started = time.perf_counter()
    problems = problems_of(text)
    assert time.perf_counter() - started < 2.0
    assert len(problems) == 1, problems
    assert problems[0].startswith("hw.yml: targets[0] (t).labels: ")
    assert message in problems[0]
    assert len(problems[0]) < 300  # a huge value is not echoed back


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            AUTH + "targets:\n  - {name: " + "t" * 129 + ", address: h, protocol: snmp, auth: a}\n",
            "targets[0]",
        ),
        ("auths:\n  " + "a" * 129 + ": {protocol: snmp, community: c}\n", "auths."),
        (
            AUTH + "targets:\n  - {name: t, address: " + "h" * 400 + ", protocol: snmp, auth: a}\n",
            "targets[0] (t).address",
        ),
    ],
)
def test_name_lengths(text: str, where: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"hw.yml: {where}")
    assert "at most" in problems[0]


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0:99999",
        "bad host:9730",
        "[::1:9730",
        "300.1.1.1:9730",
        "localhost:0",
        "a_b:80",
        "::1:9730x",
        ":http",
        "",
    ],
)
def test_invalid_listen_address_is_reported_by_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], address: str
) -> None:
    path = tmp_path / "hw.yml"
    path.write_text(f"settings:\n  listen_address: '{address}'\n")
    err = check_config(path, capsys)
    assert f"{path}: settings.listen_address: " in err


@pytest.mark.parametrize(
    "address", [":9730", "127.0.0.1:9730", "[::1]:9730", "localhost:9730", "poller.example.org"]
)
def test_valid_listen_addresses(address: str) -> None:
    assert parse_config(f"settings: {{listen_address: '{address}'}}\n").settings.listen_address


def test_secret_files_are_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_SECRET_FILE_BYTES + 1))
    binary = tmp_path / "binary"
    binary.write_bytes(b"canary-\xff\xfe-secret")
    text = (
        f"auths:\n  a: {{protocol: snmp, community_file: {big}}}\n"
        f"  b: {{protocol: ipmi, username: u, password_file: {binary}}}\n"
        f"  c: {{protocol: ipmi, username: u, password_file: /dev/zero}}\n"
    )
    problems = problems_of(text)
    assert problems == [
        f"hw.yml: auths.a: community_file: {big} is larger than 64 KiB; it should hold only "
        "the secret",
        f"hw.yml: auths.b: password_file: {binary} is not valid UTF-8 text",
        "hw.yml: auths.c: password_file: /dev/zero is larger than 64 KiB; it should hold only "
        "the secret",
    ]
    assert "canary" not in "\n".join(problems)


def test_run_reports_a_port_in_use_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "hw.yml"
        cfg.write_text(f"settings:\n  listen_address: 127.0.0.1:{port}\n")
        assert main(["run", "--config.file", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_run_rejects_a_bad_listen_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "hw.yml"
    cfg.write_text("settings: {}\n")
    assert main(["run", "--config.file", str(cfg), "--web.listen-address", "0.0.0.0:70000"]) == 1
    err = capsys.readouterr().err
    assert "--web.listen-address: address '0.0.0.0:70000': port must be 1-65535" in err
    assert "Traceback" not in err


class FakeScheduler:
    """Records what a reload applies."""

    def __init__(self) -> None:
        self.applied: list[Config] = []

    async def apply(self, config: Config, profiles: Any) -> int:
        self.applied.append(config)
        return len(config.targets)


def test_reload_reads_the_file_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    good = parse_config(AUTH + TARGET)

    def slow_load_all(path: str) -> tuple[Config, Any]:
        time.sleep(1.0)  # a big file, a slow disk
        return good, None

    monkeypatch.setattr(app, "load_all", slow_load_all)
    scheduler = FakeScheduler()

    async def scenario() -> float:
        gaps: list[float] = []

        async def ticker() -> None:
            last = time.perf_counter()
            while True:
                await asyncio.sleep(0.02)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        result = await app.reload_config("hw.yml", scheduler)  # type: ignore[arg-type]
        tick.cancel()
        assert result is good
        return max(gaps)

    worst = asyncio.run(scenario())
    assert scheduler.applied == [good]
    assert worst < 0.3, f"the event loop stalled for {worst:.2f}s during the reload"


def test_failed_reload_keeps_the_running_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tmp_path / "hw.yml"
    cfg.write_text(billion_laughs())
    scheduler = FakeScheduler()
    started = time.perf_counter()
    assert asyncio.run(app.reload_config(str(cfg), scheduler)) is None  # type: ignore[arg-type]
    assert time.perf_counter() - started < 1.0
    assert scheduler.applied == []
    assert "reload failed, keeping the running config" in caplog.text
    assert "aliases (*name) expand to more than" in caplog.text


def test_reload_survives_an_unexpected_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(path: str) -> tuple[Config, Any]:
        raise RuntimeError("bug")

    monkeypatch.setattr(app, "load_all", broken)
    scheduler = FakeScheduler()
    assert asyncio.run(app.reload_config("hw.yml", scheduler)) is None  # type: ignore[arg-type]
    assert scheduler.applied == []
    assert "reload failed unexpectedly, keeping the running config" in caplog.text
