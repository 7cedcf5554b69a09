"""Fuzzing the config loader: whatever the input, it returns a Config or raises ConfigError,
quickly. Never another exception, never a hang."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poller.config import Config, load_config, parse_config
from poller.errors import ConfigError

pytestmark = pytest.mark.fault  # hostile input

# Each example must finish well inside this; the whole file takes a few seconds.
LIMIT_SECONDS = 2.0
# 80 examples per test in make test; HWPOLLER_FUZZ_EXAMPLES (make fuzz) for more.
EXAMPLES = int(os.environ.get("HWPOLLER_FUZZ_EXAMPLES", "80"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # timed by hand below, so a slow shared machine does not make it flaky
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

GOOD = """\
settings:
  listen_address: 127.0.0.1:9730
  interval: 30s
auths:
  ups: {protocol: snmp, version: 2c, community: public}
  v3: {protocol: snmp, version: 3, username: m, auth_protocol: SHA256,
       auth_password: abcdefgh, priv_protocol: AES, priv_password: abcdefgh}
  bmc: {protocol: ipmi, username: u, password: p}
targets:
  - name: ups-1
    address: 10.0.0.5
    protocol: snmp
    auth: ups
    labels: {site: hq, room: r1}
  - {name: bmc-1, address: "[::1]:623", protocol: ipmi, auth: bmc, interval: 1m}
"""

# Keys the schema knows (so generated documents reach deep into validation), and YAML
# syntax that exercises the parser: anchors, aliases, merges, tags, flow and block styles.
KEYS = [
    "settings", "auths", "targets", "listen_address", "interval", "timeout", "retries",
    "max_repetitions", "jitter", "max_backoff", "snmp_concurrency", "ipmi_threads", "log_level",
    "protocol", "version", "community", "username", "security_level", "auth_protocol",
    "auth_password", "priv_protocol", "priv_password", "allow_insecure_protocols", "password",
    "privilege", "kg", "name", "address", "auth", "profile", "labels", "ipmi", "site", "<<",
]  # fmt: skip
TOKENS = [
    *[f"{k}: " for k in KEYS], "- ", "\n", "  ", "    ", "[", "]", "{", "}", ", ", ": ", "? ",
    "&a ", "*a", "&b ", "*b", "!!int ", "!!str ", "!!binary ", "!!set ", "!!python/object ",
    "!!timestamp ", "<<: *a", "---\n", "...\n", "%YAML 1.1\n", "'", '"', "#", "|", ">", "~",
    "null", "true", "no", "2c", "3", "1", "1e400", ".nan", "-.inf", "0x1F", "2024-02-30",
    "30s", "1ms", "${HOME}", "${UNSET_FUZZ_VAR}", "snmp", "ipmi", "\t", "\x85", "\ufeff", "é",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["2c", "3", "1", "30s", "1ms", "snmp", "ipmi", "SHA256", "AES", "x:99"]),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), inner, max_size=6),
    ),
    max_leaves=40,
)


def outcome(load: Callable[[], Config]) -> Config | list[str]:
    """The config, or the problems of the ConfigError; any other exception fails the test."""
    try:
        return load()
    except ConfigError as exc:
        return exc.problems


def check_text(text: str) -> None:
    started = time.perf_counter()
    result = outcome(lambda: parse_config(text, "fuzz.yml"))
    if not isinstance(result, Config):
        assert result
        assert all(p.startswith("fuzz.yml: ") for p in result), result
    elapsed = time.perf_counter() - started
    assert elapsed < LIMIT_SECONDS, f"{elapsed:.2f}s for {text[:200]!r}"


@FUZZ
@given(st.text(max_size=1000))
def test_any_text(text: str) -> None:
    check_text(text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=80).map("".join))
def test_yaml_token_soup(text: str) -> None:
    check_text(text)


@FUZZ
@given(documents)
def test_generated_documents(doc: Any) -> None:
    check_text(yaml.safe_dump(doc, allow_unicode=True))
    check_text(yaml.safe_dump({"settings": doc, "auths": {"a": doc}, "targets": [doc]}))


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=len(GOOD)),
            st.integers(min_value=0, max_value=20),
            st.sampled_from(TOKENS) | st.text(max_size=5),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_mutated_good_config(edits: list[tuple[int, int, str]]) -> None:
    text = GOOD
    for pos, cut, insert in edits:
        text = text[:pos] + insert + text[pos + cut :]
    check_text(text)


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(st.binary(max_size=2000) | st.text(max_size=500).map(lambda t: t.encode("utf-16")))
def test_any_bytes_from_a_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yml"
        path.write_bytes(data)
        started = time.perf_counter()
        result = outcome(lambda: load_config(path))
        assert time.perf_counter() - started < LIMIT_SECONDS
    if not isinstance(result, Config):
        assert all(p.startswith(f"{path}: ") and "\n" not in p for p in result), result


def test_good_config_parses() -> None:
    # The mutation fuzz starts from a valid file, or it would only ever test error paths.
    config = parse_config(GOOD)
    assert [t.name for t in config.targets] == ["ups-1", "bmc-1"]
