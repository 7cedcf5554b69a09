"""The status page at / and its JSON at /api/room: the room at a glance, live.

The page carries its first data in an attribute, so it draws at once, then polls /api/room.
Both read only the store (poller.room_model), never a device. Script and style ship inside
the package (poller/static/) and are inlined: sites are often offline, and one response
keeps the page behind the same TLS and basic auth as /metrics.
"""

from __future__ import annotations

import html
import json
import time
from functools import cache
from importlib import resources

from poller import __version__
from poller.room_model import build
from poller.room_values import Device, Overview
from poller.store import Store

# Seconds between the page's requests for /api/room. Building the overview takes
# milliseconds; a trap-driven poll lands within a second, so a few seconds keeps "rack A
# turns to leak" within one poll plus this.
REFRESH_SECONDS = 3


@cache
def _asset(name: str) -> str:
    return (resources.files("poller") / "static" / name).read_text(encoding="utf-8")


def overview(store: Store) -> Overview:
    """The room model of everything in the store, now."""
    return build(store.snapshot(), time.time())


def room_json(store: Store) -> bytes:
    """The body of /api/room."""
    return json.dumps(overview(store).as_dict(), ensure_ascii=False, allow_nan=False).encode()


def _fallback(devices: tuple[Device, ...]) -> str:
    """A plain table for browsers without JavaScript."""
    rows = []
    for d in devices:
        age = "never" if d.last_success_age is None else f"{d.last_success_age:.0f} s ago"
        answer = f"down: {d.reason}" if d.answer == "down" else d.answer
        cells = (d.name, d.rack or "room", answer, d.state, age)
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("device", "rack", "answer", "state", "last answer"))
    return (
        "<p>The room plan needs JavaScript. The devices:</p>"
        f"<table><tr>{head}</tr>{''.join(rows)}</table>"
    )


def page(store: Store) -> bytes:
    """The body of /: the HTML shell, its script and style, and the first data."""
    model = overview(store)
    # In an attribute value the HTML parser decodes &quot; &lt; &amp; back: the script reads
    # exactly the JSON, and no device string can end the attribute or open a tag.
    initial = html.escape(json.dumps(model.as_dict(), ensure_ascii=False, allow_nan=False))
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>hwpoller: the room at a glance</title>"
        f"<style>{_asset('room.css')}</style></head><body>"
        f"<header><h1>hwpoller {html.escape(__version__)}</h1>"
        "<span id='freshness'>loading</span>"
        "<nav><a href='metrics'>metrics</a> &middot; <a href='healthz'>healthz</a> &middot; "
        "<a href='api/room'>api/room</a></nav></header>"
        f"<main id='app' data-refresh='{REFRESH_SECONDS}' data-initial=\"{initial}\">"
        f"<noscript>{_fallback(model.devices)}</noscript></main>"
        f"<script type='module'>{_asset('room.js')}</script>"
        "</body></html>"
    ).encode()
