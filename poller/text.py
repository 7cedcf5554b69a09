"""Device strings made safe once, where they enter the model. Pure.

A device names its sensors, vendor, model and firmware itself, and a broken or hostile one
sends anything a JSON string, an SNMP OCTET STRING or an IPMI SDR can hold: lone UTF-16
surrogates (which no UTF-8 encoder accepts, so the exposition's encode() raised), control
characters (a newline in a label value, a terminal escape in a log line), bidi overrides
(U+202E turns "Inlet" around on the status page and in a terminal) and strings of a
megabyte. poller.compose applies device_text() to every reading and device info of every
protocol, so the exporter, /api/room, the page and the logs are given only strings that
encode as UTF-8, print on one line and are at most MAX_DEVICE_TEXT characters long.
"""

from __future__ import annotations

import unicodedata

# As long as a config label value may be (poller.config.MAX_LABEL_VALUE): a device's own
# strings become label values beside the config's.
MAX_DEVICE_TEXT = 256
# A partial error's message quotes device strings too (shortened) and names the resource.
MAX_MESSAGE_TEXT = 1024
# What stands in for a character that cannot be shown (a surrogate, a control character).
REPLACEMENT = "\ufffd"
# Unicode categories replaced: surrogates (not encodable) and control characters.
_REPLACED = frozenset({"Cs", "Cc"})
# Format characters (Cf: bidi embeddings, overrides and isolates, zero-width marks, the
# BOM) are invisible by definition; removed, so that nothing reorders or hides text.
_REMOVED = frozenset({"Cf"})
# Line and paragraph separators break a log line as \n does; other spaces (no-break, em
# space) are spaces.
_SPACES = frozenset({"Zl", "Zp", "Zs"})


def _slow(value: str, limit: int) -> str:
    out = []
    for char in value:
        if char.isascii():
            out.append(char if char.isprintable() else REPLACEMENT)
            continue
        category = unicodedata.category(char)
        if category in _REPLACED:
            out.append(REPLACEMENT)
        elif category in _SPACES:
            out.append(" ")
        elif category not in _REMOVED:
            out.append(char)
    clean = "".join(out)
    return clean if len(clean) <= limit else clean[: limit - 1] + "\u2026"


def device_text(value: str, limit: int = MAX_DEVICE_TEXT) -> str:
    """A device-supplied string that encodes as UTF-8, holds no control, format (bidi) or
    line-breaking characters and is at most `limit` characters long (cut with an ellipsis).
    """
    # The fast path, taken by nearly every sensor name: printable ASCII of a sane length
    # is returned as it is (two C-level scans, no copy).
    if value.isascii() and value.isprintable() and len(value) <= limit:
        return value
    return _slow(value, limit)


__all__ = ["MAX_DEVICE_TEXT", "MAX_MESSAGE_TEXT", "REPLACEMENT", "device_text"]
