"""Rendezvous ownership (moves on join/leave, sites) and the `cluster:` config section."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from poller.cluster.ownership import Member, assign, owned_by, owner
from poller.config import parse_config
from poller.errors import ConfigError

TARGETS = {f"dev-{i}": None for i in range(2000)}


def _members(n: int) -> list[Member]:
    return [Member(f"poller-{i}") for i in range(n)]


def test_every_target_has_one_owner_and_the_split_is_even() -> None:
    owners = assign(TARGETS, _members(3))
    assert set(owners.values()) == {"poller-0", "poller-1", "poller-2"}
    counts = [list(owners.values()).count(f"poller-{i}") for i in range(3)]
    assert all(abs(c - 2000 / 3) < 120 for c in counts), counts
    # The same on every member, whatever order it lists the members in.
    assert assign(TARGETS, reversed(_members(3))) == owners


@pytest.mark.parametrize("n", [2, 3, 5])
def test_join_and_leave_move_only_the_changed_members_targets(n: int) -> None:
    before = assign(TARGETS, _members(n))
    after = assign(TARGETS, _members(n + 1))
    moved = {t for t in TARGETS if before[t] != after[t]}
    assert all(after[t] == f"poller-{n}" for t in moved)  # only to the newcomer
    assert abs(len(moved) / len(TARGETS) - 1 / (n + 1)) < 0.05
    # Leaving: only the leaver's targets move.
    gone = assign(TARGETS, _members(n + 1)[1:])
    moved = {t for t in TARGETS if after[t] != gone[t]}
    assert moved == {t for t, m in after.items() if m == "poller-0"}


def test_site_targets_stay_on_their_site_until_none_is_left() -> None:
    targets = {f"dev-{i}": ("bontang" if i % 2 else "samarinda") for i in range(200)}
    targets["no-site"] = None
    members = [Member("b1", "bontang"), Member("b2", "bontang"), Member("s1", "samarinda")]
    owners = assign(targets, members)
    for name, site in targets.items():
        if site == "bontang":
            assert owners[name] in {"b1", "b2"}
        elif site == "samarinda":
            assert owners[name] == "s1"
    # Samarinda's only member gone: its targets go to the members left, anywhere.
    owners = assign(targets, members[:2])
    assert {owners[n] for n, s in targets.items() if s == "samarinda"} == {"b1", "b2"}
    assert owner("x", None, []) is None
    assert owned_by("s1", targets, members) == {
        n for n, s in targets.items() if s == "samarinda"
    } | ({"no-site"} if owner("no-site", None, members) == "s1" else set())


def _config(cluster: object) -> str:
    return yaml.safe_dump({"cluster": cluster})


def test_cluster_section_is_optional_and_strict() -> None:
    assert parse_config("targets: []").cluster is None
    config = parse_config(
        _config({"etcd": ["http://10.0.0.5:2379", "https://[fd00::5]:2379"], "member": "p-1"})
    )
    assert config.cluster is not None
    assert config.cluster.lease_ttl == 10
    assert config.cluster.prefix == "/hwpoller"
    cases = {
        "ftp://10.0.0.5:2379": "cluster.etcd[0]: 'ftp://10.0.0.5:2379': an etcd endpoint is",
        "http://10.0.0.5": "give the host and the client port",
        "http://10.0.0.5:2379/v3": "only scheme, host and port",
        "http://10.0.0.5:99999": "port must be 1-65535",
    }
    for endpoint, message in cases.items():
        with pytest.raises(ConfigError) as err:
            parse_config(_config({"etcd": [endpoint]}), "f.yml")
        assert message in str(err.value), str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config(
            _config({"etcd": [], "lease_ttl": "500ms", "prefix": "nope", "bogus": 1}), "f.yml"
        )
    text = str(err.value)
    for message in (
        "f.yml: cluster.etcd: List should have at least 1 item",
        "cluster.lease_ttl: must be between 2s and 300s",
        "cluster.prefix:",
        "cluster.bogus: unknown key",
    ):
        assert message in text, text


def test_cluster_credentials_from_files_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("CANARY-etcd-9931\n")
    config = parse_config(
        _config(
            {
                "etcd": ["https://etcd-1:2379"],
                "username": "hwpoller",
                "password_file": str(secret),
                "ca_file": "/etc/hwpoller/etcd-ca.pem",
            }
        )
    )
    assert config.cluster is not None and config.cluster.password is not None
    assert config.cluster.password.get_secret_value() == "CANARY-etcd-9931"
    assert "CANARY" not in repr(config) and "CANARY" not in str(config.cluster)
    with pytest.raises(ConfigError, match="username and password"):
        parse_config(_config({"etcd": ["http://e:2379"], "username": "u"}))
    with pytest.raises(ConfigError, match="need https"):
        parse_config(_config({"etcd": ["http://e:2379"], "ca_file": "/x"}))


def test_fence_waits_only_after_the_lease_ran_out() -> None:
    """A member that did not run past its lease waits before polling; fail static does not."""
    from poller.cluster.coordinator import Coordinator

    config = parse_config(_config({"etcd": ["http://127.0.0.1:9"], "member": "m"}))
    assert config.cluster is not None

    async def scenario() -> None:
        c = Coordinator(config.cluster, {"a": None})
        assert not c.must_wait()  # never registered: polls everything
        c._registered_once, c.fail_static, c._valid_until = True, False, 0.0
        assert c.must_wait()
        waiter = asyncio.create_task(c.wait_turn())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        c.fail_static = True  # what the lease loop decides when etcd does not answer
        c._settled.set()
        await asyncio.wait_for(waiter, 1)
        await c.client.close()

    asyncio.run(scenario())
