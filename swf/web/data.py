"""Every call the console makes into the libraries (store, projections, replay), in one place.

Routes and pages only call ``ConsoleData``; when a library's signature changes, this is the one
file to adapt. The console appends to the store only what upstream's agents post to its
monitor endpoints (``monitor_api``: each accepted call one event, ``record_call``), and never
migrates it itself: opening the store and the projector upgrades their schema as ``swf query``
does, and the projector's catch-up is the only writer of projection tables. Replay views read
one store snapshot each, as ``swf-replay`` does.

Two helpers here do what the libraries do not offer yet: paging with an offset (``queries``
only has a limit: a page is cut from ``offset + limit + 1`` rows) and the timeline series (an
aggregate over projection rows by second).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from eventstore import rest
from eventstore.catalog import Verdict, examine
from eventstore.envelope import Event, Incoming, format_time, parse_time
from eventstore.reservations import FIRST_RUN_NUMBER
from eventstore.store import EventStore
from projections import queries
from projections import tables as t
from projections.projector import NAMES, Projector
from replay import mermaid, rebuild, render, timeline
from replay.source import Scope
from swf.commands.query_commands import DISPLAY
from swf.commands.store_commands import (
    JSON_MESSAGE_COLUMNS,
    MESSAGE_COLUMNS,
    REJECTED_COLUMNS,
    _message_row,
)

log = logging.getLogger(__name__)

# The projections a list page or /api/v1/ endpoint can show, by URL name -> queries name.
TABLES = {"executions": "executions", "runs": "runs", "stf-files": "stf_files",
          "tf-samples": "tf_samples", "slices": "slices", "datasets": "datasets",
          "tasks": "tasks", "agents": "agents", "logs": "logs"}
AmbiguousExecution = queries.AmbiguousExecution
STALE_AFTER = queries.STALE_AFTER


class BadQuery(ValueError):
    """A filter value the libraries cannot use (an unreadable time, a moment...)."""


class Refused(ValueError):
    """A monitor call the store refuses (malformed): the reason, stored with it."""


CLAIMS = 1000  # values tried before an id allocation gives up (each try: one taken value)
MONITOR_TABLES = {"agents": t.agents, "executions": t.executions, "run_state": t.run_state,
                  "stf_files": t.stf_files, "tf_samples": t.tf_samples, "tf_slices": t.tf_slices,
                  "workflow_definitions": t.workflow_definitions}


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[dict[str, Any]]
    more: bool  # rows exist beyond this page (older ones for newest-first tables)


def display_columns(name: str) -> tuple[str, ...]:
    """What `swf query NAME` shows as a table (a page's columns)."""
    return DISPLAY[name]


def row_columns(name: str) -> tuple[str, ...]:
    """Every column of a row, as `swf query NAME --json` prints it."""
    return queries.COLUMNS[name]


def column_types(name: str) -> list[tuple[str, type, bool]]:
    """(column, Python type, may be null) of a row, for the API's schema."""
    table = queries.SPECS[name].table
    out = []
    for column in table.columns:
        if column.name == "task_key":
            continue
        nullable = bool(column.nullable) or column.name == "namespace"  # '' reads as None
        kind: type
        if column.name == "runs":
            kind = list
        elif column.name == "parameters":
            kind, nullable = dict, True
        else:
            kind = _PYTHON_TYPES.get(type(column.type).__name__, str)
        out.append((str(column.name), kind, nullable))
    return out


_PYTHON_TYPES: dict[str, type] = {"Integer": int, "BigInteger": int, "Boolean": bool,
                                  "Float": float, "String": str, "Text": str}
MESSAGE_ROW_COLUMNS = JSON_MESSAGE_COLUMNS
MESSAGE_LIST_COLUMNS = MESSAGE_COLUMNS
REJECTED_ROW_COLUMNS = REJECTED_COLUMNS


# eventstore.envelope.format_time writes years before 1000 without their leading zeros, which
# neither parse back nor sort as text; every stored time is later, so earlier moments are
# clamped to this one (the same rows match).
EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)


def moment(text: str | None) -> str | None:
    """An ISO-8601 filter value in the store's one form; BadQuery when it is not a time."""
    if text is None or text == "":
        return None
    try:
        return format_time(max(parse_time(text), EARLIEST))
    except (ValueError, OverflowError):  # overflow: a time zone pushing it past year 9999
        raise BadQuery(f"{text!r} is not an ISO-8601 time") from None


def now_text() -> str:
    return format_time(datetime.now(UTC))


class ConsoleData:
    """The store and its projector, opened once for the console's lifetime."""

    def __init__(self, url: str | None, sender_zone: str = "UTC") -> None:
        self.store = EventStore(url, sender_zone=sender_zone)
        try:
            self.projector = Projector(self.store)
        except BaseException:
            self.store.close()
            raise
        self.backend = self.store.backend
        self.url_text = self.store.engine.url.render_as_string(hide_password=True)
        self._catch_up_lock = threading.Lock()

    def close(self) -> None:
        self.store.close()

    # -- projections: lists ----------------------------------------------------------------

    def rows(self, name: str, *, offset: int = 0, limit: int = 100,
             **filters: Any) -> Page:
        """One page of `swf query NAME` rows with the same filters. Newest-first tables
        (executions, logs) page from the newest end: offset 0 is what --limit shows."""
        for key in ("since", "until", "now"):
            if key in filters:
                filters[key] = moment(filters[key])
        if name == "agents":
            fetched = queries.agents(self.store, limit=offset + limit + 1, **filters)
        elif name == "logs":
            fetched = queries.logs(self.store, limit=offset + limit + 1, **filters)
        else:
            try:
                fetched = queries.query(self.store, name, limit=offset + limit + 1, **filters)
            except ValueError as problem:  # e.g. a run filter on a table without runs
                raise BadQuery(str(problem)) from None
        more = len(fetched) > offset + limit
        if queries.SPECS[name].latest:
            end = len(fetched) - offset
            return Page(fetched[max(0, end - limit):max(0, end)], more)
        return Page(fetched[offset:offset + limit], more)

    def recent_runs(self, limit: int) -> list[dict[str, Any]]:
        """The runs created last (newest first); not in ``queries`` (its limit keeps the
        lowest run numbers)."""
        table = t.run_state
        statement = (sa.select(table).order_by(table.c.created_at.desc(),
                                               table.c.run_number.desc()).limit(limit))
        with self.store.engine.connect() as conn:
            return [_plain(row) for row in conn.execute(statement)]

    def execution(self, execution_id: str, *, namespace: str | None = None
                  ) -> dict[str, Any] | None:
        """`swf query execution ID --json`; AmbiguousExecution when the namespace is needed."""
        return queries.execution_summary(self.store, execution_id, namespace=namespace)

    def execution_runs(self, execution_id: str, namespace: str | None) -> list[dict[str, Any]]:
        return queries.runs(self.store, execution_id=execution_id, namespace=namespace)

    def run(self, run_number: int, namespace: str | None = None) -> list[dict[str, Any]]:
        """The run_state rows of a run number (one per namespace it was used in)."""
        return queries.runs(self.store, run=run_number, namespace=namespace)

    # -- the log ---------------------------------------------------------------------------

    def messages(self, *, after: int = 0, limit: int = 100, valid: bool | None = None,
                 execution_id: str | None = None, run: int | None = None,
                 msg_type: str | None = None, namespace: str | None = None,
                 since: str | None = None, until: str | None = None) -> Page:
        """`swf query messages --json` rows (``valid=False``: `swf query rejected`), from
        position ``after`` on."""
        events = self.store.read(after=after, execution_id=execution_id, run_id=run,
                                 msg_types=[msg_type] if msg_type else None,
                                 namespace=namespace, since=moment(since),
                                 until_time=moment(until), valid=valid, limit=limit + 1)
        rows = [message_row(event) for event in events]
        return Page(rows[:limit], len(rows) > limit)

    def message(self, position: int) -> dict[str, Any] | None:
        """One stored message: its row, and the catalog's normalized form."""
        found = next(iter(self.store.read(after=position - 1, until=position, limit=1)), None)
        if found is None:
            return None
        return {**message_row(found), "data": found.data}

    def head(self) -> int:
        return self.store.head()

    def follow(self, after: int, stop: threading.Event) -> Iterator[Event]:
        return self.store.follow(after, stop=stop)

    def recorder(self) -> dict[str, Any]:
        """The newest stored event: when it was recorded and how long after it was sent."""
        head = self.store.head()
        latest = next(iter(self.store.read_raw(after=max(head - 1, 0), until=head, limit=1)),
                      None)
        info: dict[str, Any] = {"head": head, "last_recorded_at": None, "last_sent_at": None,
                                "recording_delay_s": None, "idle_s": None}
        if latest is None:
            return info
        recorded = parse_time(latest.recorded_at)
        info["last_recorded_at"] = latest.recorded_at
        info["last_sent_at"] = latest.sent_at
        if latest.sent_at:
            info["recording_delay_s"] = round(
                (recorded - parse_time(latest.sent_at)).total_seconds(), 3)
        info["idle_s"] = round((datetime.now(UTC) - recorded).total_seconds(), 3)
        return info

    # -- projector -------------------------------------------------------------------------

    def projections(self) -> list[dict[str, Any]]:
        return self.projector.status()

    def catch_up(self) -> int:
        """Apply new events to the projections (one catch-up at a time in this process)."""
        with self._catch_up_lock:
            return self.projector.catch_up()

    # -- upstream's monitor endpoints (monitor_api) ---------------------------------------------

    def examine_call(self, call: Incoming) -> Verdict:
        """How the store will read a monitor call (the catalog's verdict)."""
        return examine(call.body, call.destination, headers=call.headers,
                       sender_zone=self.store.sender_zone)

    def record_call(self, call: Incoming) -> tuple[Verdict, bool]:
        """Append one monitor call; returns the catalog's verdict and whether it was new (False:
        a retry the store absorbed). A malformed call is stored rejected all the same."""
        verdict = self.examine_call(call)
        result = self.store.append([call])
        return verdict, bool(result.events)

    def reserve(self, kind: str, call: Incoming, *, workflow_name: str | None = None) -> int:
        """The next agent id, run number or workflow execution sequence, reserved atomically and
        derived from the log: the call is appended as the claim of one value (its event id names
        the value, so a value is claimed once, whichever process or thread asks); a value taken
        meanwhile makes it claim the next. Starting points: agent ids count the claims; run
        numbers follow the highest run stored (every claim names its run); sequences follow
        the claims and the executions of the workflow. (The one place to switch to the
        store's own reservation.)"""
        store = self.store
        if kind == "agent_id":
            value = store.count_of_type("rest_agent_id") + 1
        elif kind == "run_number":
            top = store.top_run_id()
            value = FIRST_RUN_NUMBER if top is None else top + 1
        else:
            value = max(store.count_of_type("rest_execution_sequence"),
                        store.executions_with_prefix(f"{workflow_name}-")
                        if workflow_name else 0) + 1
        for _ in range(CLAIMS):
            claim = Incoming(call.destination, call.body, {**call.headers,
                                                            "allocated": str(value)})
            verdict = self.examine_call(claim)
            if verdict.reason is not None:
                self.store.append([claim])
                raise Refused(verdict.reason)
            if self.store.append([claim]).events:
                return value
            value += 1
        raise RuntimeError(f"no free {kind} after {CLAIMS} tries")

    def first_heartbeat(self, instance_name: str, event_id: str) -> bool:
        """Whether this heartbeat is the agent's first (its id the only one of the agent's)."""
        earlier = self.store.with_id_prefix(rest.heartbeat_prefix(instance_name), limit=2)
        return all(event.event_id == event_id for event in earlier)

    def created(self, kind: str, key: str) -> list[Event]:
        """The stored creates of one natural key (``rest.created_prefix``), oldest first."""
        return self.store.with_id_prefix(rest.created_prefix(kind, key))

    def namespace_of(self, *, execution_id: str | None = None,
                     run: int | None = None) -> str | None:
        """The namespace the execution's (else the run's) latest events carry."""
        found = None
        if execution_id is not None:
            found = self.store.latest_namespace(execution_id=execution_id)
        if found is None and run is not None:
            found = self.store.latest_namespace(run_id=run)
        return found

    def monitor_rows(self, table: str, *, where: dict[str, Any] | None = None,
                     order: tuple[str, ...] = (), limit: int | None = None,
                     offset: int = 0) -> list[dict[str, Any]]:
        """Projection rows for an upstream GET, caught up first (a call just answered is in
        them), filtered by equality. A catch-up that fails answers from the tables as they
        are (the failure is logged; the next request tries again)."""
        try:
            self.catch_up()
        except Exception:
            log.exception("catching the projections up failed")
        table_ = MONITOR_TABLES[table]
        statement = sa.select(table_)
        for name, value in (where or {}).items():
            statement = statement.where(table_.c[name] == value)
        statement = statement.order_by(*(table_.c[name] for name in order)).offset(offset)
        if limit is not None:
            statement = statement.limit(limit)
        with self.store.engine.connect() as conn:
            return [_plain(row) for row in conn.execute(statement)]

    def monitor_count(self, table: str, *, where: dict[str, Any] | None = None) -> int:
        """How many projection rows an upstream GET's filters select (after monitor_rows)."""
        table_ = MONITOR_TABLES[table]
        statement = sa.select(sa.func.count()).select_from(table_)
        for name, value in (where or {}).items():
            statement = statement.where(table_.c[name] == value)
        with self.store.engine.connect() as conn:
            return int(conn.execute(statement).scalar_one())

    # -- replay ----------------------------------------------------------------------------

    def state_at(self, execution_id: str, until: str) -> dict[str, Any]:
        """`swf-replay ID --until POSITION|TIME --json`."""
        text = until.strip()
        try:
            limit = timeline.parse_moment(text if text.isdigit() else str(moment(text)))
        except (ValueError, BadQuery):
            raise BadQuery(f"{until!r} is neither a log position nor an ISO-8601 time") from None
        with self.store.snapshot() as view:
            return timeline.state_at(view, Scope(execution_id), limit)

    def drift(self, execution_id: str) -> dict[str, Any]:
        """`swf-replay ID --no-catch-up --json`: rebuild from the log and compare with the
        tables at their checkpoints (a lagging projection is not drift)."""
        with self.store.snapshot() as view:
            conn = view.connection
            stored: dict[str, int] = dict(conn.execute(sa.select(
                t.projection_checkpoints.c.name, t.projection_checkpoints.c.position)).all())
            stops = {name: int(stored.get(name, 0)) for name in NAMES}
            comparison = rebuild.compare(view, Scope(execution_id), stops,
                                         lambda scope: rebuild.read_stored(conn, scope))
        return render.comparison_json(comparison, "store")

    def mermaid(self, execution_id: str) -> str:
        """`swf-replay ID --mermaid`."""
        with self.store.snapshot() as view:
            events = [*view.introductions(execution_id), *view.execution_events(execution_id)]
        return "\n".join(mermaid.diagram(execution_id, events)) + "\n"

    def timeline(self, execution_id: str, namespace: str | None) -> dict[str, Any]:
        """Cumulative STF files registered, TF samples registered and slices completed or
        failed per second of event time, over the execution's runs."""
        runs = sa.select(t.run_state.c.run_number, t.run_state.c.namespace).where(
            t.run_state.c.execution_id == execution_id)
        if namespace is not None:
            runs = runs.where(t.run_state.c.namespace == namespace)
        series = {"stf_files": (t.stf_files, "created_at", None),
                  "tf_samples": (t.tf_samples, "created_at", None),
                  "slices_completed": (t.tf_slices, "updated_at", "completed"),
                  "slices_failed": (t.tf_slices, "updated_at", "failed")}
        out: dict[str, Any] = {"execution_id": execution_id}
        with self.store.engine.connect() as conn:
            for name, (table, column, status) in series.items():
                second = sa.func.substr(table.c[column], 1, 19)
                statement = (sa.select(second, sa.func.count())
                             .where(sa.tuple_(table.c.run_number, table.c.namespace).in_(runs),
                                    table.c[column].is_not(None))
                             .group_by(second).order_by(second))
                if status is not None:
                    statement = statement.where(table.c.status == status)
                times, totals, total = [], [], 0
                for when, count in conn.execute(statement):
                    total += count
                    times.append(f"{when}Z")
                    totals.append(total)
                out[name] = {"time": times, "total": totals}
        return out


def message_row(event: Event) -> dict[str, Any]:
    """Every field `swf query messages|rejected --json` prints (MESSAGE_ROW_COLUMNS,
    REJECTED_ROW_COLUMNS pick theirs), plus ``time`` and ``status``."""
    return _message_row(event, True)


def _plain(row: sa.Row[Any]) -> dict[str, Any]:
    values = {str(key): value for key, value in row._mapping.items()}
    if values.get("namespace") == "":
        values["namespace"] = None
    return values

