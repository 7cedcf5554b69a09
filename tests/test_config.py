"""Configuration: strict validation, every problem at once with its key path, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from poller.cli import main
from poller.config import load_config, parse_config
from poller.config_values import parse_duration, split_address
from poller.driver import PollSpec
from poller.errors import ConfigError
from poller.snmp.auth import SnmpOptions

GOOD = """
settings:
  listen_address: 127.0.0.1:9730
  interval: 30s
auths:
  ups-community:
    protocol: snmp
    version: 2c
    community: ${UPS_COMMUNITY}
  noc-v3:
    protocol: snmp
    version: 3
    username: monitor
    security_level: authPriv
    auth_protocol: SHA256
    auth_password_file: AUTHFILE
    priv_protocol: AES
    priv_password: priv-secret-123
  bmc-monitor:
    protocol: ipmi
    username: monitor
    password: ${BMC_PASSWORD}
targets:
  - name: ups-1
    address: 10.20.0.5
    protocol: snmp
    auth: ups-community
    labels: {site: bontang, room: server-room, rack: A}
  - name: env-1
    address: "[2001:db8::7]:1161"
    protocol: snmp
    auth: noc-v3
    interval: 1m
    retries: 2
    max_repetitions: 5
  - name: web-1-bmc
    address: 10.20.1.11
    protocol: ipmi
    auth: bmc-monitor
"""


@pytest.fixture
def good_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    secret = tmp_path / "snmp-auth"
    secret.write_text("auth-secret-456\n")
    monkeypatch.setenv("UPS_COMMUNITY", "community-from-env")
    monkeypatch.setenv("BMC_PASSWORD", "bmc-from-env")
    return GOOD.replace("AUTHFILE", str(secret))


def test_valid_config_resolves_secrets_and_defaults(good_text: str) -> None:
    config = parse_config(good_text, "hw.yml")
    ups, env, bmc = config.targets
    assert config.auths["ups-community"].community.get_secret_value() == "community-from-env"  # type: ignore[union-attr]
    v3 = config.auths["noc-v3"]
    assert v3.auth_password.get_secret_value() == "auth-secret-456"  # type: ignore[union-attr]
    assert config.interval_for(ups) == 30.0
    assert config.timeout_for(ups) == pytest.approx(24.0)  # 0.8 x interval
    assert config.interval_for(env) == 60.0
    assert config.retries_for(env) == 2
    options = PollSpec.from_config(config, env).options
    assert isinstance(options, SnmpOptions)
    assert options.max_repetitions == 5
    assert options.max_repetitions_fixed
    assert bmc.protocol == "ipmi"
    # Secrets never show in a dump or repr of the config.
    dumped = repr(config) + str(config.model_dump())
    for secret in ("community-from-env", "auth-secret-456", "priv-secret-123", "bmc-from-env"):
        assert secret not in dumped


def test_three_mistakes_are_reported_together(good_text: str) -> None:
    broken = (
        good_text.replace("    retries: 2\n", "    retries: 2\n    colour: blue\n")  # unknown key
        .replace("auth: bmc-monitor", "auth: bmc-monitr")  # dangling reference
        .replace("interval: 1m", "interval: soon")  # wrong type
    )
    with pytest.raises(ConfigError) as err:
        parse_config(broken, "hw.yml")
    problems = err.value.problems
    assert len(problems) == 3, problems
    text = "\n".join(problems)
    assert "hw.yml: targets[1] (env-1).colour: unknown key" in text
    assert "targets[1] (env-1).interval: expected a duration" in text
    assert "targets[2] (web-1-bmc).auth: 'bmc-monitr' is not defined in auths" in text


def test_missing_env_and_unreadable_secret_file(
    good_text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UPS_COMMUNITY")
    broken = good_text.replace("auth_password_file: /", "auth_password_file: /nonexistent/")
    with pytest.raises(ConfigError) as err:
        parse_config(broken, "hw.yml")
    text = str(err.value)
    assert "auths.ups-community.community: environment variable UPS_COMMUNITY is not set" in text
    assert "auth_password_file: cannot read /nonexistent/" in text


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (
            "{protocol: snmp, version: 3, username: u, auth_protocol: MD5, auth_password: "
            "abcdefgh, priv_protocol: AES, priv_password: abcdefgh}",
            "MD5 are insecure",
        ),
        (
            "{protocol: snmp, version: 3, username: u, auth_protocol: SHA, auth_password: "
            "abcdefgh, priv_protocol: DES, priv_password: abcdefgh}",
            "DES are insecure",
        ),
        (
            "{protocol: snmp, version: 3, username: u, security_level: authNoPriv, "
            "auth_protocol: SHA256, auth_password: short}",
            "at least 8 characters",
        ),
        (
            "{protocol: snmp, version: 3, username: u, security_level: authPriv, "
            "auth_protocol: SHA256, auth_password: abcdefgh}",
            "needs priv_protocol",
        ),
        ("{protocol: snmp, version: 2c}", "needs community"),
        (
            "{protocol: snmp, version: 2c, community: x, username: u}",
            "username does not apply to SNMP version 2c",
        ),
        ("{protocol: telnet}", "protocol"),
    ],
)
def test_auth_rules(auth: str, message: str) -> None:
    text = f"auths:\n  a: {auth}\ntargets:\n  - {{name: t, address: h, protocol: snmp, auth: a}}\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert message in str(err.value)


def test_md5_des_with_explicit_opt_in() -> None:
    text = (
        "auths:\n  a: {protocol: snmp, version: 3, username: u, auth_protocol: MD5, "
        "auth_password: abcdefgh, priv_protocol: DES, priv_password: abcdefgh, "
        "allow_insecure_protocols: true}\n"
    )
    assert parse_config(text).auths["a"].protocol == "snmp"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("{name: t, address: h, protocol: ipmi, auth: a}", "is snmp credentials"),
        ("{name: 't x', address: h, protocol: snmp, auth: a}", "name"),
        ("{name: t, address: 'h:99999', protocol: snmp, auth: a}", "port must be 1-65535"),
        ("{name: t, address: h, protocol: snmp, auth: a, labels: {device: x}}", "reserved"),
        ("{name: t, address: h, protocol: snmp, auth: a, labels: {'bad-name': x}}", "valid"),
        (
            "{name: t, address: h, protocol: snmp, auth: a, interval: 10s, timeout: 20s}",
            "must not be longer than the interval",
        ),
    ],
)
def test_target_rules(target: str, message: str) -> None:
    text = f"auths:\n  a: {{protocol: snmp, community: c}}\ntargets:\n  - {target}\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert message in str(err.value)


def test_duplicate_names_and_yaml_errors() -> None:
    dup = (
        "auths:\n  a: {protocol: snmp, community: c}\ntargets:\n"
        "  - {name: t, address: h, protocol: snmp, auth: a}\n"
        "  - {name: t, address: g, protocol: snmp, auth: a}\n"
    )
    with pytest.raises(ConfigError, match=r"duplicate target name \(also targets\[0\]\)"):
        parse_config(dup)
    with pytest.raises(ConfigError, match="line 3"):
        parse_config("targets:\n  - [unclosed\n", "bad.yml")


def test_helpers() -> None:
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration(15) == 15.0
    with pytest.raises(ValueError, match="duration"):
        parse_duration("30 parsecs")
    assert split_address("10.0.0.1", 161) == ("10.0.0.1", 161)
    assert split_address("ups.example:1161", 161) == ("ups.example", 1161)
    assert split_address("[::1]:1161", 161) == ("::1", 1161)
    assert split_address("fe80::1", 623) == ("fe80::1", 623)


def test_check_config_cli(
    tmp_path: Path, good_text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yml"
    good.write_text(good_text)
    assert main(["check-config", str(good)]) == 0
    assert "OK (3 targets" in capsys.readouterr().out
    bad = tmp_path / "bad.yml"
    bad.write_text(good_text.replace("auth: bmc-monitor", "auth: nope").replace("30s", "x"))
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "settings.interval" in err
    assert "targets[2] (web-1-bmc).auth" in err
    unknown_profile = tmp_path / "profile.yml"
    unknown_profile.write_text(
        good_text.replace(
            "    auth: ups-community\n", "    auth: ups-community\n    profile: nope\n"
        )
    )
    assert main(["check-config", str(unknown_profile)]) == 1
    assert "no profile named 'nope'" in capsys.readouterr().err
    assert main(["check-config", str(tmp_path / "missing.yml")]) == 1
    assert "cannot read config file" in capsys.readouterr().err


def test_file_sd_target_files(tmp_path: Path) -> None:
    inventory = tmp_path / "sd"
    inventory.mkdir()
    (inventory / "ups.json").write_text(
        '[{"targets": ["10.0.0.5", "10.0.0.6:1161"],'
        ' "labels": {"__auth__": "c", "site": "hq", "rack": "B"}}]'
    )
    (inventory / "bmc.yml").write_text(
        "- targets: [10.0.1.11]\n  labels: {__auth__: i, __protocol__: ipmi, room: r1}\n"
    )
    text = (
        "settings:\n  target_files: [sd/*.json, sd/*.yml]\n"
        "auths:\n  c: {protocol: snmp, community: x}\n  i: {protocol: ipmi, username: u}\n"
        "targets:\n  - {name: local, address: h, protocol: snmp, auth: c}\n"
    )
    cfg = tmp_path / "hw.yml"
    cfg.write_text(text)
    from poller.config import load_config

    config = load_config(cfg)
    names = {t.name: t for t in config.targets}
    assert set(names) == {"local", "10.0.0.5", "10.0.0.6:1161", "10.0.1.11"}
    assert names["10.0.0.6:1161"].labels == {"site": "hq", "rack": "B"}
    assert names["10.0.1.11"].protocol == "ipmi"
    (inventory / "bad.json").write_text('[{"targets": ["10.0.0.9"], "labels": {"__auht__": "c"}}]')
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "bad.json: [0].labels.__auth__: missing" in str(err.value)


def test_log_level_flag_before_or_after_run() -> None:
    from poller.cli import build_parser

    parser = build_parser()
    after = parser.parse_args(["run", "--config.file", "x.yml", "--log.level", "debug"])
    assert after.log_level == "debug"
    before = parser.parse_args(["--log.level", "warning", "run", "--config.file", "x.yml"])
    assert before.log_level == "warning"
    neither = parser.parse_args(["run", "--config.file", "x.yml"])
    assert neither.log_level is None


def test_sensor_labels_are_checked_like_labels() -> None:
    from poller.errors import ConfigError

    base = (
        "auths: {a: {protocol: snmp, version: 2c, community: x}}\n"
        "targets:\n  - {name: t, address: 10.0.0.1, protocol: snmp, auth: a, "
    )
    good = parse_config(base + "sensor_labels: [{match: '(?i)rack b', labels: {rack: B}}]}\n", "f")
    ((pattern, labels),) = good.targets[0].sensor_label_rules()
    assert pattern.search("Spot Leak (Rack B Under Floor)") and labels == (("rack", "B"),)
    bad = base + "sensor_labels: [{match: '(', labels: {device: x}}, {match: a, labels: {}}]}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(bad, "f")
    text = str(info.value)
    assert "sensor_labels[0].match: bad regular expression" in text
    assert "sensor_labels[0].labels: label name 'device' is reserved" in text
    assert "sensor_labels[1].labels" in text


def test_target_files_get_the_config_readers_limits(tmp_path: Path) -> None:
    from poller.errors import ConfigError

    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    for level in "bcdefghi":
        prev = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
    (tmp_path / "bomb.yml").write_text(bomb)
    (tmp_path / "dupes.yml").write_text(
        "- targets: [10.0.0.1]\n  labels: {a: 1}\n  labels: {b: 2}\n"
    )
    (tmp_path / "utf16.json").write_bytes('[{"targets": ["10.0.0.2"]}]'.encode("utf-16"))
    doc = (
        "settings: {target_files: ['*.yml', '*.json']}\n"
        "auths: {a: {protocol: snmp, version: 2c, community: x}}\n"
    )
    (tmp_path / "hwpoller.yml").write_text(doc)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "hwpoller.yml")
    text = str(info.value)
    assert "bomb.yml: cannot read target file" in text
    assert "dupes.yml" in text and "labels" in text
    assert "utf16.json: cannot read target file" in text
