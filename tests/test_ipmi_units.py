"""IPMI pieces without a BMC: profiles, location rules, SDR decoding, normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyghmi.constants import Health
from pyghmi.ipmi import sdr as pyghmi_sdr
from pyghmi.ipmi.private import constants as pyghmi_constants

from poller.config import parse_config
from poller.errors import ProfileError
from poller.ipmi import sdr
from poller.ipmi.profile import LoadedIpmiProfile, locate, match_ipmi
from poller.ipmi.readings import normalize_sensors, state_of
from poller.ipmi.session import REFUSED_V15, Response, classify_login_error
from poller.model import LimitType, Location, State
from poller.profiles import ProfileSet, load_profiles
from tests.ipmisim import full_record


@pytest.fixture(scope="module")
def profiles() -> ProfileSet:
    return load_profiles()


@pytest.mark.parametrize(
    ("manufacturer", "profile"),
    [
        (674, "ipmi-dell"),
        (11, "ipmi-hpe"),
        (47196, "ipmi-hpe"),
        (10876, "ipmi-supermicro"),
        (47488, "ipmi-supermicro"),
        (19046, "ipmi-lenovo"),
        (2, "ipmi-lenovo"),
        (343, "ipmi-generic"),
        (99999, "ipmi-generic"),
    ],
)
def test_profile_by_manufacturer_id(profiles: ProfileSet, manufacturer: int, profile: str) -> None:
    found = match_ipmi(profiles.of_type(LoadedIpmiProfile), manufacturer)
    assert found is not None and found.name == profile
    assert isinstance(profiles.get(profile), LoadedIpmiProfile)


@pytest.mark.parametrize(
    ("profile", "name", "entity", "location"),
    [
        ("ipmi-dell", "Inlet Temp", 0x07, Location.INLET),
        ("ipmi-dell", "System Board Inlet Temp", 0x07, Location.INLET),
        ("ipmi-dell", "Exhaust Temp", 0x07, Location.EXHAUST),
        ("ipmi-dell", "Temp", 0x03, Location.CPU),
        ("ipmi-hpe", "01-Inlet Ambient", 0x37, Location.INLET),
        ("ipmi-hpe", "12-Sys Exhaust", 0x07, Location.EXHAUST),
        ("ipmi-hpe", "02-CPU 1", 0x03, Location.CPU),
        ("ipmi-lenovo", "Ambient Temp", 0x07, Location.INLET),
        ("ipmi-supermicro", "System Temp", 0x07, Location.AMBIENT),
        ("ipmi-supermicro", "PCH Temp", 0x07, Location.OTHER),
        ("ipmi-generic", "Ambient", 0x07, Location.AMBIENT),
        ("ipmi-generic", "Front Panel Temp", 0x0C, Location.INLET),
        ("ipmi-generic", "Temp 1", 0x37, Location.INLET),  # by entity: air inlet
        ("ipmi-generic", "BB Temp", 0x07, Location.OTHER),
    ],
)
def test_location_rules(
    profiles: ProfileSet, profile: str, name: str, entity: int, location: Location
) -> None:
    rules = profiles.typed(profile, LoadedIpmiProfile).rules
    assert locate(rules, name, entity) == location


def test_profile_is_strict(tmp_path: Path) -> None:
    (tmp_path / "ipmi-bad.yaml").write_text(
        "name: ipmi-bad\nprotocol: ipmi\nlocations:\n  - {name: '(', location: inlet}\n"
        "colour: blue\n"
    )
    with pytest.raises(ProfileError) as err:
        load_profiles([tmp_path])
    assert "bad regular expression" in str(err.value) and "colour: unknown key" in str(err.value)


def _sensor(name: str, sensor_type: int, unit: str, number: int, entity: int = 7) -> sdr.SdrSensor:
    return sdr.SdrSensor(name, number, 0, entity, 1, sensor_type, 0x01, unit, True, None)


def test_normalize_omits_missing_and_flags_stopped_fan(profiles: ProfileSet) -> None:
    sensors = [
        _sensor("Inlet Temp", 0x01, "°C", 1),
        _sensor("Fan1", 0x04, "RPM", 2),
        _sensor("Fan2", 0x04, "RPM", 3),
        _sensor("Volt", 0x02, "V", 4),
        _sensor("Gone Temp", 0x01, "°C", 5),
        _sensor("Room", 0x01, "°F", 6),
    ]
    values = {
        (0, 1): sdr.SensorValue(24.0, Health.Warning, 0),
        (0, 2): sdr.SensorValue(0.0, Health.Ok, 0),  # the BMC did not raise the event
        (0, 3): sdr.SensorValue(4000.0, Health.Ok, 0),
        (0, 4): sdr.SensorValue(12.1, Health.Ok, 0),
        (0, 6): sdr.SensorValue(77.0, Health.Ok, 0),
    }
    limits = {(0, 2): {LimitType.LOW_CRITICAL: 300.0}}
    rules = profiles.typed("ipmi-generic", LoadedIpmiProfile).rules
    out = {
        (r.quantity.value, r.sensor, r.limit_type or r.hw_type): r.state or r.value
        for r in normalize_sensors(sensors, values, limits, rules)
    }
    assert out[("temperature", "Inlet Temp", None)] == 24.0
    assert out[("status", "Inlet Temp", "temperature")] == "degraded"
    assert out[("status", "Fan1", "fan")] == "failed"
    assert out[("status", "Fan2", "fan")] == "ok"
    assert out[("temperature", "Room", None)] == 25.0
    assert not [k for k in out if k[1] in ("Volt", "Gone Temp")]


def test_state_of_health() -> None:
    assert state_of(Health.Ok) == State.OK
    assert state_of(Health.Warning) == State.DEGRADED
    assert state_of(Health.Critical) == State.FAILED
    assert state_of(Health.Failed | Health.Warning) == State.FAILED


def test_signed_thresholds_decode() -> None:
    record = full_record(
        1,
        {
            "number": 4,
            "name": "Inlet Temp",
            "entity": 7,
            "type": "temperature",
            "signed": True,
            "value": 23,
            "thresholds": {"lc": -7, "lnc": 3, "unc": 38, "uc": 42},
        },
    )
    ident = sdr.DeviceId(674, 1, "7.10")
    (sensor,) = sdr.parse_records([bytes(record)], ident)
    assert isinstance(sensor.entry, pyghmi_sdr.SDREntry) and pyghmi_constants
    assert (sensor.name, sensor.entity, sensor.unit) == ("Inlet Temp", 7, "°C")

    def raw(netfn: int, command: int, data: bytes, lun: int) -> Response:
        assert (netfn, command, data) == (0x04, 0x27, bytes([4]))
        return Response(0, bytes([0x1B, 3, 0xF9, 0, 38, 42, 0]))

    assert sdr.read_thresholds(raw, sensor) == {
        LimitType.LOW_DEGRADED: 3.0,
        LimitType.LOW_CRITICAL: -7.0,
        LimitType.HIGH_DEGRADED: 38.0,
        LimitType.HIGH_CRITICAL: 42.0,
    }


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("Incorrect password provided", "auth"),
        ("Unauthorized name in RAKP2", "auth"),
        ("No Cipher suite match with proposed security algorithms", "unsupported"),
        (REFUSED_V15, "unsupported"),
        ("timeout", "timeout"),
        ("Insufficient resources to create new session", "protocol"),
    ],
)
def test_login_errors_classified(message: str, reason: str) -> None:
    assert classify_login_error(message).reason == reason


def test_ipmi_auth_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-a-file\n")
    (tmp_path / "kg").write_text("bmc-key\n")
    config = parse_config(
        f"auths:\n  bmc:\n    protocol: ipmi\n    username: monitor\n"
        f"    password_file: {tmp_path / 'pw'}\n    kg_file: {tmp_path / 'kg'}\n"
    )
    auth = config.auths["bmc"]
    assert auth.protocol == "ipmi" and auth.privilege == "user"
    assert auth.password is not None and auth.password.get_secret_value() == "from-a-file"
    assert auth.kg is not None and "bmc-key" not in repr(auth)
