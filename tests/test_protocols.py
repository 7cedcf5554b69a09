"""The protocol registry and what is built from it: config keys, the auth union, the profile
loader (includes resolved at load time for every protocol)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from poller import protocols
from poller.config import parse_config
from poller.driver import DriverContext, PollSpec
from poller.errors import ConfigError, ProfileError
from poller.ipmi import IpmiResource
from poller.ipmi.auth import IpmiOptions
from poller.profiles import load_profiles
from poller.snmp import SnmpResource
from poller.snmp.auth import SnmpOptions


def config(targets: list[dict[str, object]], settings: dict[str, object] | None = None) -> str:
    return yaml.safe_dump(
        {
            "settings": settings or {},
            "auths": {
                "s": {"protocol": "snmp", "community": "c"},
                "i": {"protocol": "ipmi", "username": "u", "password": "p"},
            },
            "targets": targets,
        }
    )


def test_every_record_is_complete() -> None:
    seen = set()
    for record in protocols.protocols():
        assert record.name not in seen
        seen.add(record.name)
        assert record.auth_model.model_fields["protocol"].annotation is not None
        assert "name" in record.profile_model.model_fields
        assert callable(record.driver_factory())  # the module and factory exist
    assert {"snmp", "ipmi"} <= seen


def test_unknown_protocol_names_the_choices() -> None:
    text = config([{"name": "x", "address": "h", "protocol": "modbus", "auth": "s"}])
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    message = str(err.value)
    assert "targets[0] (x).protocol" in message
    for name in protocols.names():
        assert repr(name) in message


def test_a_protocols_own_keys_apply_to_its_targets_only() -> None:
    text = config(
        [
            {"name": "ups", "address": "h", "protocol": "snmp", "auth": "s", "ipmi": {}},
            {"name": "bmc", "address": "h", "protocol": "ipmi", "auth": "i", "max_repetitions": 5},
        ]
    )
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    message = str(err.value)
    assert "targets[0] (ups).ipmi: applies to ipmi targets only" in message
    assert "targets[1] (bmc).max_repetitions: applies to snmp targets only" in message


def test_options_and_resources_come_from_the_protocol() -> None:
    cfg = parse_config(
        config(
            [
                {"name": "ups", "address": "h", "protocol": "snmp", "auth": "s"},
                {"name": "pdu", "address": "h", "protocol": "snmp", "auth": "s", "max_inflight": 1},
                {
                    "name": "bmc",
                    "address": "h:1623",
                    "protocol": "ipmi",
                    "auth": "i",
                    "ipmi": {"allow_anonymous": True},
                },
            ],
            {"max_repetitions": 20, "ipmi_threads": 3, "snmp_concurrency": 7},
        )
    )
    ups, pdu, bmc = (PollSpec.from_config(cfg, t) for t in cfg.targets)
    assert ups.options == SnmpOptions(max_repetitions=20, max_repetitions_fixed=True)
    assert isinstance(pdu.options, SnmpOptions)
    assert pdu.options.max_inflight == 1
    assert (bmc.port, bmc.options) == (1623, IpmiOptions(allow_anonymous=True))
    context = DriverContext(load_profiles(), cfg.settings)
    assert context.resource("ipmi", IpmiResource).threads == 3
    assert context.resource("snmp", SnmpResource).limit == 7
    context.shutdown()


def write(directory: Path, name: str, text: str) -> None:
    (directory / f"{name}.yaml").write_text(text)


def test_includes_are_checked_at_load_for_every_protocol(tmp_path: Path) -> None:
    write(tmp_path, "bmc-a", "name: bmc-a\nprotocol: ipmi\ninclude: [no-such-profile]\n")
    write(tmp_path, "bmc-b", "name: bmc-b\nprotocol: ipmi\ninclude: [rfc1628-ups]\n")
    write(tmp_path, "bmc-c", "name: bmc-c\nprotocol: ipmi\ninclude: [bmc-d]\n")
    write(tmp_path, "bmc-d", "name: bmc-d\nprotocol: ipmi\ninclude: [bmc-c]\n")
    with pytest.raises(ProfileError) as err:
        load_profiles([tmp_path])
    message = str(err.value)
    assert "bmc-a.yaml: include: no profile named 'no-such-profile'" in message
    assert "bmc-b.yaml: include: 'rfc1628-ups' is a snmp profile, not ipmi" in message
    assert "include loop: bmc-c -> bmc-d -> bmc-c" in message


def test_ipmi_includes_resolve_at_load(tmp_path: Path) -> None:
    write(
        tmp_path,
        "bmc-site",
        "name: bmc-site\nprotocol: ipmi\nmatch: {manufacturer_id: [99999]}\n"
        "include: [ipmi-generic]\nlocations: [{name: 'Front Panel', location: inlet}]\n",
    )
    from poller.ipmi.profile import LoadedIpmiProfile

    profiles = load_profiles([tmp_path])
    site = profiles.typed("bmc-site", LoadedIpmiProfile)
    generic = profiles.typed("ipmi-generic", LoadedIpmiProfile)
    assert site.included == frozenset({"ipmi-generic"})
    assert site.rules[0].name == "Front Panel"
    assert site.rules[1:] == generic.rules


def test_unknown_profile_protocol_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "odd", "name: odd\nprotocol: modbus\n")
    with pytest.raises(ProfileError, match=r"odd.yaml: protocol: unknown protocol 'modbus'"):
        load_profiles([tmp_path])
