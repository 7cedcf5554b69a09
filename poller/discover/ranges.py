"""Which addresses `hwpoller discover` may scan: exactly the IPv4 ranges given, bounded.

A range is an address (10.20.0.5), a network (10.20.0.0/24: its hosts, without the network
and broadcast addresses) or a span (10.20.0.10-10.20.0.50). Host names are refused: a name
resolves to whatever DNS says, and the scan must touch only what the operator wrote.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# A /16: more than any one server room, few enough to scan at 200 probes/s in minutes.
MAX_ADDRESSES = 65_536
# Even with --force: a /8 at 200 probes/s already takes a day.
HARD_MAX_ADDRESSES = 1 << 24
# Destinations that are never one device: this-network, multicast, limited broadcast.
_REFUSED = (
    (ipaddress.ip_network("0.0.0.0/8"), "is 'this network', not a device address"),
    (ipaddress.ip_network("224.0.0.0/4"), "is multicast; every listener would answer"),
    (ipaddress.ip_network("255.255.255.255/32"), "is the broadcast address"),
)


class RangeError(ValueError):
    """A range that cannot or may not be scanned; the message says why."""


@dataclass(frozen=True, slots=True)
class AddressSet:
    """Merged, sorted, inclusive [first, last] spans of IPv4 addresses (as integers)."""

    spans: tuple[tuple[int, int], ...]

    def __len__(self) -> int:
        return sum(last - first + 1 for first, last in self.spans)

    def __iter__(self) -> Iterator[str]:
        # Lazily: a forced /8 is 16 million addresses.
        for first, last in self.spans:
            for number in range(first, last + 1):
                yield str(ipaddress.IPv4Address(number))

    def __contains__(self, address: object) -> bool:
        try:
            number = int(ipaddress.IPv4Address(str(address)))
        except ValueError:
            return False
        return any(first <= number <= last for first, last in self.spans)


def _check(first: int, last: int, text: str) -> None:
    for network, why in _REFUSED:
        low, high = int(network.network_address), int(network.broadcast_address)
        if first <= high and last >= low:
            shown = network.network_address if network.prefixlen < 32 else network
            raise RangeError(f"{text}: overlaps {network} ({shown} {why})")


def _span(item: str) -> tuple[int, int]:
    """[first, last] of one range's text; ValueError (ipaddress's) when it is not one."""
    if "/" in item:
        network = ipaddress.IPv4Network(item, strict=True)
        first, last = int(network.network_address), int(network.broadcast_address)
        if network.prefixlen < 31:  # a /31 or /32 has no network or broadcast address
            first, last = first + 1, last - 1
        return first, last
    if "-" in item:
        low, _, high = item.partition("-")
        return int(ipaddress.IPv4Address(low.strip())), int(ipaddress.IPv4Address(high.strip()))
    number = int(ipaddress.IPv4Address(item))
    return number, number


def parse_range(text: str) -> tuple[int, int]:
    """One range as an inclusive [first, last] span of IPv4 addresses (integers)."""
    item = text.strip()
    if ":" in item:
        raise RangeError(f"{text}: only IPv4 ranges can be scanned")
    try:
        first, last = _span(item)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            network = ipaddress.IPv4Network(item, strict=False)
            raise RangeError(
                f"{text}: has host bits set; did you mean {network}? (or give one address)"
            ) from None
        raise RangeError(
            f"{text}: not an IPv4 address, network (10.20.0.0/24) or span "
            "(10.20.0.10-10.20.0.50); host names are not scanned"
        ) from None
    if last < first:
        raise RangeError(f"{text}: the range ends before it starts")
    _check(first, last, text)
    return first, last


def parse_ranges(texts: Sequence[str], force: bool = False) -> AddressSet:
    """Every address of the ranges, each once; RangeError when there are more than
    MAX_ADDRESSES (unless forced) or HARD_MAX_ADDRESSES."""
    if not texts:
        raise RangeError("give at least one address range to scan")
    spans = sorted(parse_range(text) for text in texts)
    merged: list[list[int]] = []
    for first, last in spans:
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    found = AddressSet(tuple((first, last) for first, last in merged))
    count = len(found)
    if count > HARD_MAX_ADDRESSES:
        raise RangeError(
            f"the ranges hold {count:,} addresses; at most {HARD_MAX_ADDRESSES:,} (a /8) "
            "can be scanned, even with --force"
        )
    if count > MAX_ADDRESSES and not force:
        raise RangeError(
            f"the ranges hold {count:,} addresses, more than {MAX_ADDRESSES:,} (a /16); "
            "scan smaller ranges, or pass --force if you really mean it"
        )
    return found
