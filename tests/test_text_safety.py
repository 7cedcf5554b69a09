"""Device strings are made safe once, where every protocol's output passes (poller.compose
with poller.text), so the exposition, /api/room, the page and the logs are safe for any
str a device sends (issue 28): lone surrogates, control and bidi characters, megabytes."""

from __future__ import annotations

import io
import json
import logging
import unicodedata
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from poller.compose import Contribution, checked, merge
from poller.exporter import exposition
from poller.model import DeviceData, DeviceInfo, HwType, Location, PollResult, Quantity, Reading
from poller.statuspage import page, room_json
from poller.store import Store
from poller.text import MAX_DEVICE_TEXT, REPLACEMENT, device_text
from tests.util import promtool_check_metrics

# Every character, lone surrogates included (hypothesis leaves category Cs out unless asked).
ANY_CHAR = st.characters(codec=None, categories=None, exclude_categories=())
ANY_TEXT = st.text(ANY_CHAR, max_size=300) | st.sampled_from(
    ["Fan \ud800", "\udfff", "Inlet\u202e", "a\nb\rc", "\x1b[2J", "x" * 100_000, "\u2028", ""]
)
UNSAFE = frozenset({"Cs", "Cc", "Cf", "Zl", "Zp"})
FUZZ = settings(max_examples=300, deadline=None, database=None, derandomize=True)


def safe(text: str) -> bool:
    """Encodes as UTF-8, on one line, nothing invisible or reordering, not too long."""
    text.encode("utf-8")
    return len(text) <= MAX_DEVICE_TEXT and not any(unicodedata.category(c) in UNSAFE for c in text)


@FUZZ
@given(ANY_TEXT)
def test_device_text_is_safe_and_idempotent_for_any_str(value: str) -> None:
    clean = device_text(value)
    assert safe(clean), ascii(clean)
    assert device_text(clean) == clean
    if len(value) > MAX_DEVICE_TEXT:
        assert clean.endswith("\u2026")


@FUZZ
@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=MAX_DEVICE_TEXT))
def test_printable_ascii_is_returned_as_it_is(value: str) -> None:
    assert device_text(value) is value  # the fast path: no copy


def test_what_is_replaced_removed_and_kept() -> None:
    assert device_text("Fan \ud800") == "Fan " + REPLACEMENT
    assert device_text("Inlet\nhw_up 1\x00") == f"Inlet{REPLACEMENT}hw_up 1{REPLACEMENT}"
    assert device_text("\u202eteltnI\u202c \u2066x\u2069\ufeff") == "teltnI x"
    assert device_text("a\u2028b\u00a0c") == "a b c"
    assert device_text("Température CPU 温度") == "Température CPU 温度"
    assert device_text("x" * 300) == "x" * 255 + "\u2026"


# -- every output, for any str --------------------------------------------------------------

STRINGS = st.lists(ANY_TEXT, min_size=1, max_size=6)


@pytest.fixture(scope="module")
def everything() -> Iterator[Store]:
    """One store gathering every example (a target each) for a single promtool run."""
    store = Store()
    yield store
    promtool_check_metrics(exposition(store).decode())


def _data(names: list[str], info: list[str]) -> DeviceData:
    fields = (info * 5)[:5]
    readings = []
    for name in names:
        readings.append(Reading(Quantity.TEMPERATURE, name, 21.0, location=Location.INLET))
        readings.append(Reading(Quantity.STATUS, name, state="ok", hw_type=HwType.TEMPERATURE))
        readings.append(Reading(Quantity.LEAK, name, 0.0, location=Location.FLOOR))
    return DeviceData(
        info=DeviceInfo(*fields),
        readings=tuple(readings),
        partial_errors=tuple(f"table {n}: timeout" for n in names),
    )


@settings(FUZZ, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=STRINGS, info=STRINGS, via_merge=st.booleans())
def test_exposition_room_page_and_logs_are_safe_for_any_device_str(
    everything: Store, names: list[str], info: list[str], via_merge: bool
) -> None:
    raw = _data(names, info)
    # checked() is what every driver's data passes (driver.Checked); the SNMP driver, which
    # merges its profiles' readings itself, passes merge().
    data = merge([Contribution("p", False, frozenset(), raw)], "snmpv2c") if via_merge else (
        checked(raw)
    )  # fmt: skip
    for reading in data.readings:
        assert safe(reading.sensor), ascii(reading.sensor)
    assert {r.sensor for r in data.readings} == {device_text(n) for n in names}
    for value in (data.info.vendor, data.info.model, data.info.firmware, data.info.profile):
        assert safe(value), ascii(value)
    name = f"t{len(everything.snapshot())}"
    result = PollResult(name, "snmp", True, 0.1, 1_700_000_000.0, data=data, labels={"rack": "A"})
    one = Store()
    for store in (one, everything):
        store.register(name, "snmp", {"rack": "A"})
        store.record(result)
    text = exposition(one).decode()  # the exporter encodes its lines
    families = {f.name: f for f in text_string_to_metric_families(text)}
    sensors = {s.labels["sensor"] for s in families["hw_temperature_celsius"].samples}
    assert sensors == {device_text(n) for n in names}
    assert json.loads(room_json(one))  # ensure_ascii=False, then encoded
    page(one).decode("utf-8")
    # A log line quoting device strings: a strict UTF-8 stream, as a journal or file has.
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    handler = _StrictHandler(stream)
    log = logging.getLogger("test_text_safety")
    log.propagate = False
    log.addHandler(handler)
    try:
        for error in data.partial_errors:
            log.warning("target %s: partial: %s (%s)", name, error, data.info.model)
        stream.flush()
    finally:
        log.removeHandler(handler)
    # One line per record: no device string breaks a line or forges the next one.
    assert stream.buffer.getvalue().decode().count("\n") == len(data.partial_errors)


class _StrictHandler(logging.StreamHandler[io.TextIOWrapper]):
    """A handler that fails the test where logging would print "--- Logging error ---"."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        raise AssertionError(f"a log line could not be written: {record.msg}")
