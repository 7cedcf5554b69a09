"""SNMP driver: detects a target's profiles once, then reads what they need through a
transport (poller.snmp.wire for SNMPv2c, poller.snmp.transport's gufo-snmp one otherwise)
and normalises it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from poller.compose import Contribution, merge
from poller.driver import DriverContext, PollSpec
from poller.errors import DeviceError, DeviceTimeoutError, UnsupportedError
from poller.model import DeviceData
from poller.snmp import SnmpResource
from poller.snmp.auth import SnmpAuth, SnmpOptions
from poller.snmp.evaluate import Fetched, normalize, text
from poller.snmp.profile import SYS_DESCR, SYS_OBJECT_ID, Profile, RawValue, oid_key
from poller.snmp.profile import candidates as profile_candidates
from poller.snmp.transport import BULK_CAP, GET_CHUNK, GufoTransport, SnmpTransport
from poller.snmp.wire import WalkSpec, WireTransport


class SnmpDriver:
    """Polls one SNMP target: detects its profile once, then GETs scalars and walks columns."""

    def __init__(
        self,
        spec: PollSpec,
        context: DriverContext,
        transport: SnmpTransport | None = None,
    ) -> None:
        assert isinstance(spec.auth, SnmpAuth)  # noqa: S101 - config cross-check guarantees it
        assert isinstance(spec.options, SnmpOptions)  # noqa: S101 - the registry builds it
        self._spec = spec
        self._auth = spec.auth
        self._options = options = spec.options
        self._profiles = context.profiles
        # Per-request timeout: the retries of one request fit in 80 % of the poll's deadline,
        # so that the driver, not the deadline, reports why a device stays silent.
        request_timeout = max(0.2, min(10.0, 0.8 * spec.timeout / (spec.retries + 1)))
        # SNMPv2c on the project's own codec (every column of every table per GETBULK);
        # SNMPv1 and SNMPv3 on gufo-snmp.
        native = spec.auth.version == "2c" and options.client == "native"
        kind = WireTransport if native else GufoTransport
        self._transport: SnmpTransport = transport or kind(
            spec.host,
            spec.port,
            spec.auth,
            request_timeout,
            spec.retries,
            options.max_repetitions,
            context.resource("snmp", SnmpResource).semaphore,
        )
        self._applied: list[Profile] | None = (
            [self._profiles.typed(spec.profile, Profile)] if spec.profile is not None else None
        )
        self._sys_object_id: str | None = None
        # Rows each table had at the last poll, to pick the cheaper way to walk it, and the
        # varbinds a walk of its entry returned (columns in range that are not needed can
        # have more rows than the needed ones).
        self._rows: dict[str, int] = {}
        self._varbinds: dict[str, int] = {}
        # Rows each column had at the last poll (the column walker's GETBULK sizes).
        self._column_rows: dict[str, int] = {}
        # PDUs the last detection cost, and the last poll (detection included), as reported
        # by `probe` and the benchmarks; None when the transport does not count them.
        self.detection_requests = 0
        self.requests_last_poll: int | None = None
        self._plan: _Plan | None = None
        # Last poll's answers, the profiles applied to them and the merged result.
        self._last: tuple[Fetched, list[Profile], DeviceData] | None = None
        # Largest GETBULK a walk sized from last poll's rows may ask for: the target's own
        # max_repetitions when it sets one (fragile cards), otherwise BULK_CAP.
        self._bulk_cap = (
            options.max_repetitions
            if options.max_repetitions_fixed
            else max(options.max_repetitions, BULK_CAP)
        )

    @property
    def profile(self) -> Profile | None:
        """The primary profile in use (configured or detected), if known yet."""
        return self._applied[0] if self._applied else None

    @property
    def applied(self) -> tuple[Profile, ...]:
        """Every profile applied to the device, best first (empty before detection)."""
        return tuple(self._applied or ())

    async def detect(self) -> list[Profile]:
        """Every profile whose match holds: identity from sysObjectID/sysDescr, presence
        from one GET of all `oid_exists` objects and one GETNEXT per `subtree`."""
        got = await self._transport.get_many([SYS_DESCR, SYS_OBJECT_ID])
        requests = 1
        sys_object_id = text(got.get(SYS_OBJECT_ID)).lstrip(".")
        sys_descr = text(got.get(SYS_DESCR))
        candidates = profile_candidates(self._profiles, sys_object_id, sys_descr)
        self._sys_object_id = sys_object_id
        exists = sorted({o for c in candidates for o in c.spec.match.oid_exists}, key=oid_key)
        present: set[str] = set()
        if exists:
            answered = await self._transport.get_many(exists)
            requests += (len(exists) + GET_CHUNK - 1) // GET_CHUNK
            present |= {o for o in exists if answered.get(o) is not None}
        for subtree in sorted({o for c in candidates for o in c.spec.match.subtree}, key=oid_key):
            requests += 1
            if await self._transport.lands_in(subtree):
                present.add(subtree)
        self.detection_requests = requests
        applied = [c for c in candidates if _present(c, present)]
        # A profile recognised by identity alone says what the device *is*: only the most
        # specific one applies. Profiles with a presence test are MIBs it speaks: all apply.
        models = [p for p in applied if not p.spec.match.has_presence]
        applied = [p for p in applied if p.spec.match.has_presence or p is models[0]]
        # A profile another applied one already includes adds nothing but duplicates.
        covered = {name for p in applied for name in p.included}
        applied = [p for p in applied if p.name not in covered]
        if not applied:
            shown = sys_object_id or "(none)"
            probes = len(exists) + len({o for c in candidates for o in c.spec.match.subtree})
            raise UnsupportedError(
                f"no profile matches sysObjectID {shown} ({sys_descr[:80]!r}); "
                f"it answered none of {probes} MIB probes of {len(candidates)} candidate "
                "profiles"
            )
        return applied

    async def poll(self) -> DeviceData:
        """Read the device once and normalise it through every applied profile."""
        counted = getattr(self._transport, "requests", None)
        try:
            return await self._poll()
        finally:
            after = getattr(self._transport, "requests", None)
            if isinstance(counted, int) and isinstance(after, int):
                self.requests_last_poll = after - counted

    async def _poll(self) -> DeviceData:
        if self._applied is None:
            self._applied = await self.detect()
            self._plan = None
        applied = self._applied
        if self._plan is None:
            self._plan = _Plan.of(applied)
        plan = self._plan
        oids = list(plan.scalars)
        detected = self._spec.profile is None
        if detected:
            oids.append(SYS_OBJECT_ID)  # one extra varbind tells us if the device was swapped
        if isinstance(self._transport, WireTransport):
            fetched = await self._fetch_together(self._transport, oids, plan)
        else:
            fetched = Fetched(scalars=await self._transport.get_many(oids) if oids else {})
            await self._walk_all(self._plan_walks(plan), fetched)
        if detected and SYS_OBJECT_ID in fetched.scalars:
            now = text(fetched.scalars[SYS_OBJECT_ID]).lstrip(".")
            if now != self._sys_object_id:
                self._applied = None  # re-detect on the next poll
        version = {"1": "snmpv1", "2c": "snmpv2c", "3": "snmpv3"}[self._auth.version]
        last = self._last
        if (
            last is not None
            and last[1] is applied
            and last[0] == fetched
            and not _has_bool(fetched)
        ):
            # The device answered exactly what it did last poll (most of a device's values
            # hold still between polls) and the same profiles apply: evaluation and merge
            # are pure, so the result is last poll's, the very same object (which lets the
            # exporter reuse that poll's rendered lines).
            return last[2]
        parts = [
            Contribution(
                profile=p.name,
                fallback=p.spec.match.fallback,
                supersedes=frozenset(p.spec.supersedes),
                data=normalize(p, fetched),
            )
            for p in applied
        ]
        merged = merge(parts, protocol=version)
        self._last = (fetched, applied, merged)
        return merged

    async def _fetch_together(
        self, transport: WireTransport, oids: list[str], plan: _Plan
    ) -> Fetched:
        """Scalars and every needed column of every table together: the scalars ride the
        walk's GETBULKs where the agent allows (else a GET beside the first GETBULK, with
        max_inflight above 1), the columns as many per GETBULK as fit."""
        walks = self._column_walks(plan)
        scalars, rows, failed = await transport.fetch(
            oids, walks, self._column_rows, self._bulk_cap, self._options.max_inflight
        )
        for walk in walks:
            if isinstance(walk, tuple):
                _split_entry(walk[0], plan.by_entry[walk[0]], rows, failed, self._column_rows)
        for column, got in rows.items():
            self._column_rows[column] = len(got)
        return Fetched(scalars=scalars, columns=rows, failed=failed)

    def _column_walks(self, plan: _Plan) -> list[WalkSpec]:
        """What the column walker reads: each needed column, except a table that was empty
        at the last poll (an alarm table with no alarm, an input table with nothing
        plugged in): its entry from the first to the last needed column, one varbind
        instead of one per column while it stays empty. Every GETBULK asks all its walks
        for as many rows as its largest needs, so a walk of a table with rows (many
        varbinds in one walk) would make the others ask for more than they need."""
        known = self._column_rows
        out: list[WalkSpec] = []
        for entry, columns, last in plan.tables:
            if len(columns) > 1 and last < 128 and all(known.get(c) == 0 for c in columns):
                out.append((entry, plan.first[entry], last))
            else:
                out.extend(columns)
        return out

    async def _walk_all(self, walks: list[_Walk], fetched: Fetched) -> None:
        """Run the walks, up to max_inflight at once (each on its own socket), filing the
        rows in `fetched`. A table that fails costs only the readings that need it; two
        timeouts with no table answered in between mean the device is gone."""
        if not walks:
            return
        queue = list(reversed(walks))
        state = {"timeouts": 0}
        gone: list[DeviceTimeoutError] = []

        async def worker(transport: SnmpTransport) -> None:
            while queue and not gone:
                walk = queue.pop()
                try:
                    rows = await transport.walk(walk.oid, walk.stop, walk.span, walk.bulk)
                except DeviceTimeoutError as exc:
                    state["timeouts"] += 1
                    if state["timeouts"] >= 2:
                        gone.append(exc)
                        return
                    fetched.failed.update(dict.fromkeys(walk.columns, f"walk {walk.oid}: {exc}"))
                    continue
                except DeviceError as exc:
                    fetched.failed.update(dict.fromkeys(walk.columns, f"walk {walk.oid}: {exc}"))
                    continue
                state["timeouts"] = 0
                self._rows[walk.entry] = _distribute(walk, rows, fetched.columns)
                if walk.stop is not None:
                    self._varbinds[walk.entry] = len(rows)

        lanes = min(self._options.max_inflight, len(walks))
        if lanes == 1:
            await worker(self._transport)
        else:
            async with asyncio.TaskGroup() as group:
                for number in range(lanes):
                    group.create_task(worker(self._transport.lane(number)))
        if gone:
            raise gone[0]

    def _plan_walks(self, plan: _Plan) -> list[_Walk]:
        """How to read every table the applied profiles need, given last poll's rows.

        Round trips dominate the cost (an APC card answers in ~300 ms), so each table is read
        the cheaper way given the rows it had last time: one walk per needed column, or one
        walk of the whole entry up to the last needed column; and each GETBULK asks for as
        many repetitions as last poll's rows need (up to the cap), so a small table costs
        one request. A wide table with many rows and few needed columns is walked by
        column; a short one, by entry. Unknown tables start at the target's max_repetitions.
        """
        out: list[_Walk] = []
        cap = self._bulk_cap
        for entry, columns, last in plan.tables:
            known = self._rows.get(entry)
            rows = 1 if known is None else known
            by_column = len(columns) * (rows // cap + 1)
            whole = (rows * last) // cap + 1
            # A table never seen may be long: walking its entry reads every column up to the
            # last needed one, so do that only when the needed ones are most of that range.
            sparse = known is None and 2 * len(columns) < last
            if len(columns) > 1 and whole < by_column and not sparse:
                bulk = self._bulk(known, max(rows * last, self._varbinds.get(entry, 0)) + 1)
                out.append(_Walk(entry, entry, f"{entry}.{last + 1}", last, columns, bulk))
            else:
                bulk = self._bulk(known, rows + 1)
                out.extend(_Walk(entry, c, None, 1, (c,), bulk) for c in columns)
        return out

    def _bulk(self, known_rows: int | None, needed: int) -> int:
        """GETBULK size: what last poll's rows need, within [1, cap]; the target's
        max_repetitions for a table never seen."""
        if known_rows is None:
            return self._options.max_repetitions
        return max(1, min(needed, self._bulk_cap))

    async def close(self) -> None:
        """Close the transport's socket."""
        self._transport.close()


def _has_bool(fetched: Fetched) -> bool:
    """Whether any value is a BOOLEAN: True == 1 and False == 0, so equal answers could
    still evaluate differently (text "True" vs "1"). Other values equal across types (an
    int and an integral float) read the same as text and as numbers."""
    # map(type, ...) and set() run in C: a poll's values are scanned in microseconds.
    if bool in set(map(type, fetched.scalars.values())):
        return True
    return any(bool in set(map(type, rows.values())) for rows in fetched.columns.values())


def _present(profile: Profile, present: set[str]) -> bool:
    """Whether a candidate's presence test (if it has one) passed."""
    match = profile.spec.match
    if not match.has_presence:
        return True
    return any(o in present for o in (*match.oid_exists, *match.subtree))


@dataclass(frozen=True, slots=True)
class _Walk:
    """One walk of a poll: `oid` (an entry or a column) up to `stop`, yielding `columns`."""

    entry: str
    oid: str
    stop: str | None
    span: int  # table columns the range covers (row limit)
    columns: tuple[str, ...]
    bulk: int


@dataclass(frozen=True)
class _Plan:
    """What the applied profiles need each poll, computed once per detection."""

    scalars: tuple[str, ...]
    # (entry OID, needed column OIDs, last needed column number), in OID order
    tables: tuple[tuple[str, tuple[str, ...], int], ...]

    @property
    def columns(self) -> list[str]:
        """Every needed column, in OID order."""
        return [c for _, cols, _ in self.tables for c in cols]

    @cached_property
    def by_entry(self) -> dict[str, tuple[str, ...]]:
        """Each table entry's needed columns."""
        return {entry: cols for entry, cols, _ in self.tables}

    @cached_property
    def first(self) -> dict[str, int]:
        """Each table entry's first needed column number."""
        return {entry: int(cols[0].rpartition(".")[2]) for entry, cols, _ in self.tables}

    @classmethod
    def of(cls, applied: Sequence[Profile]) -> _Plan:
        """Union of every applied profile's scalars and columns, each fetched once."""
        scalars = sorted({o for p in applied for o in p.scalar_oids}, key=oid_key)
        by_entry: dict[str, list[str]] = {}
        for column in sorted({c for p in applied for c in p.column_oids}, key=oid_key):
            by_entry.setdefault(column.rpartition(".")[0], []).append(column)
        tables = tuple(
            (entry, tuple(cols), max(int(c.rpartition(".")[2]) for c in cols))
            for entry, cols in by_entry.items()
        )
        return cls(tuple(scalars), tables)


def _split_entry(
    entry: str,
    columns: tuple[str, ...],
    rows: dict[str, dict[str, RawValue]],
    failed: dict[str, str],
    varbinds: dict[str, int],
) -> None:
    """File an entry walk's "column.index" rows under the needed columns (in place), or its
    failure under each of them; remember how many varbinds it read (its next GETBULK size)."""
    got = rows.pop(entry, None)
    if got is None:
        reason = failed.pop(entry, f"walk {entry}: no answer")
        failed.update(dict.fromkeys(columns, reason))
        return
    varbinds[entry] = len(got)
    split: dict[str, dict[str, RawValue]] = {c: {} for c in columns}
    by_number = {c.rpartition(".")[2]: split[c] for c in columns}
    for key, value in got.items():
        number, _, index = key.partition(".")
        target = by_number.get(number)
        if target is not None and index:
            target[index] = value
    rows.update(split)


def _distribute(
    walk: _Walk, rows: list[tuple[str, RawValue]], out: dict[str, dict[str, RawValue]]
) -> int:
    """File a walk's varbinds under their column OIDs by row index, in one pass; return the
    number of rows (the most any needed column had)."""
    wanted = {c: out.setdefault(c, {}) for c in walk.columns}
    if walk.stop is None:
        column = walk.columns[0]
        cut = len(column) + 1
        target = wanted[column]
        for oid, value in rows:
            target[oid[cut:]] = value
    else:
        cut = len(walk.entry) + 1
        by_number = {c.rpartition(".")[2]: d for c, d in wanted.items()}
        for oid, value in rows:
            number, _, index = oid[cut:].partition(".")
            got = by_number.get(number)
            if got is not None:
                got[index] = value
    return max((len(v) for v in wanted.values()), default=0)
