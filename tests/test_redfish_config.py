"""Redfish config keys, addresses, TLS trust files and profiles: pure, no peers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from poller.config import parse_config
from poller.errors import ConfigError, ProfileError
from poller.profiles import load_profiles
from poller.protocols import get
from poller.redfish.auth import RedfishAuth, RedfishOptions, parse_redfish_address
from poller.redfish.profile import LoadedRedfishProfile, describe_match, match_redfish


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.0.0.5", ("10.0.0.5", 443)),
        ("bmc-1.example:8443", ("bmc-1.example", 8443)),
        ("http://127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("http://127.0.0.1", ("127.0.0.1", 80)),
        ("https://h:8443/", ("h", 8443)),
        ("https://[fd00::5]", ("fd00::5", 443)),
    ],
)
def test_addresses(address: str, expected: tuple[str, int]) -> None:
    assert parse_redfish_address(address, 443) == expected


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("ftp://h", "scheme must be http or https"),
        ("https://h/redfish/v1", "without a path"),
        ("https://user:pw@h", "credentials go in auths:"),
        ("https://h:0", "port must be 1-65535"),
        ("https://h:99999", "out of range"),
    ],
)
def test_bad_addresses(address: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_redfish_address(address, 443)


def config(auth: dict[str, object], **target: object) -> str:
    base = {"name": "t", "address": "10.0.0.5", "protocol": "redfish", "auth": "rf"}
    doc = {
        "auths": {"rf": {"protocol": "redfish", "username": "u", "password": "p", **auth}},
        "targets": [base | target],
    }
    return yaml.safe_dump(doc)


def test_target_options_and_auth(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    doc = yaml.safe_load(config({}, redfish={"max_concurrency": 1, "expand": False}))
    del doc["auths"]["rf"]["password"]
    doc["auths"]["rf"]["password_file"] = str(secret)
    parsed = parse_config(yaml.safe_dump(doc))
    auth = parsed.auths["rf"]
    assert isinstance(auth, RedfishAuth)
    assert auth.password.get_secret_value() == "from-file"
    assert (auth.tls_insecure, auth.session, auth.ca_file) == (False, "auto", None)
    assert "from-file" not in repr(auth)
    target = parsed.targets[0]
    options = get("redfish").options(target, parsed.settings)
    assert options == RedfishOptions(max_concurrency=1, expand=False)
    assert RedfishOptions() == RedfishOptions(max_concurrency=2, expand=True)


def test_ca_file_read_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ca_file: cannot read /nonexistent/ca\.pem"):
        parse_config(config({"ca_file": "/nonexistent/ca.pem"}))
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        parse_config(config({"ca_file": str(junk)}))
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match="not both"):
        parse_config(config({"ca_file": str(pem), "tls_insecure": True}))


def test_bad_target_address_and_options() -> None:
    # The protocol is validated first, so the address is read with Redfish's syntax.
    with pytest.raises(ConfigError, match=r"\.address: .*scheme must be http or https"):
        parse_config(config({}, address="gopher://h"))
    with pytest.raises(ConfigError, match=r"scheme must be http or https"):
        parse_config(config({}, address="gopher://h:70"))
    assert parse_config(config({}, address="http://127.0.0.1")).targets[0].address
    with pytest.raises(ConfigError, match="without a path"):
        parse_config(config({}, address="https://h:443/redfish/v1"))
    assert parse_config(config({}, address="http://127.0.0.1:8000")).targets[0].address
    with pytest.raises(ConfigError, match="max_concurrency"):
        parse_config(config({}, redfish={"max_concurrency": 0}))
    with pytest.raises(ConfigError, match="session"):
        parse_config(config({"session": "sometimes"}))


def test_profiles_match_by_manufacturer_with_generic_fallback() -> None:
    profiles = load_profiles().of_type(LoadedRedfishProfile)
    names = {p.name for p in profiles}
    assert {"redfish-generic", "redfish-dell", "redfish-hpe", "redfish-lenovo",
            "redfish-supermicro"} <= names  # fmt: skip

    def pick(manufacturer: str) -> str:
        found = match_redfish(profiles, [manufacturer], [])
        assert found is not None
        return found.name

    assert pick("Dell Inc.") == "redfish-dell"
    assert pick("HPE") == "redfish-hpe"
    assert pick("Lenovo") == "redfish-lenovo"
    assert pick("Supermicro") == "redfish-supermicro"
    assert pick("Contoso") == "redfish-generic"
    dell = next(p for p in profiles if p.name == "redfish-dell")
    assert dell.skipped("/redfish/v1/Chassis/Enclosure.Internal.0-1")
    assert not dell.skipped("/redfish/v1/Chassis/System.Embedded.1")
    assert dell.locate(["iDRAC.Embedded.1#SystemBoardInletTemp", "System Board Inlet Temp"],
                       "SystemBoard").value == "inlet"  # fmt: skip
    assert describe_match(dell.spec) == ["manufacturer ~ /^Dell/"]


def test_bad_profile_is_reported(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "name: redfish-bad\nprotocol: redfish\nlocations:\n  - {name: '(', location: inlet}\n"
    )
    with pytest.raises(ProfileError, match="bad regular expression"):
        load_profiles([tmp_path])
