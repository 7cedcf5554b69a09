"""Who polls which target, computed by every member alike from the live member set.

Rendezvous (highest random weight) hashing: each target goes to the member whose hash of
(member, target) is highest. Every member computes the same answer without talking to the
others, and when a member joins or leaves only the targets whose highest weight it has (or
had) move: 1/N of them, the least any scheme can move.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Member:
    """A live member as its etcd key describes it."""

    name: str
    site: str | None = None


def weight(member: str, target: str) -> int:
    """The rendezvous weight of a target on a member (stable across processes and hosts)."""
    digest = hashlib.blake2b(
        f"{member}\0{target}".encode(), digest_size=8, person=b"hwpoller"
    ).digest()
    return int.from_bytes(digest, "big")


def owner(target: str, site: str | None, members: Iterable[Member]) -> str | None:
    """The member that polls a target: among the members of the target's own site when any
    is alive, otherwise among all of them. None when there is no member at all."""
    live = list(members)
    local = [m for m in live if site is not None and m.site == site]
    candidates = local or live
    if not candidates:
        return None
    return max(candidates, key=lambda m: (weight(m.name, target), m.name)).name


def assign(targets: Mapping[str, str | None], members: Iterable[Member]) -> dict[str, str | None]:
    """Owner of every target: {target name: member name}; `targets` maps names to the
    target's `site` label (None without one)."""
    live = sorted(set(members))
    return {name: owner(name, site, live) for name, site in targets.items()}


def owned_by(
    me: str, targets: Mapping[str, str | None], members: Iterable[Member]
) -> frozenset[str]:
    """The targets one member polls."""
    return frozenset(n for n, m in assign(targets, members).items() if m == me)
