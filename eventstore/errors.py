"""The store's own errors (each message one line, fit to print without a traceback), and
``is_outage``: whether a failed append is worth trying again."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of the event store's own errors."""


class StoreUnavailable(StoreError):
    """The database URL is malformed, its driver is missing, or the server cannot be reached."""


class SchemaTooNew(StoreError):
    """The database was migrated by newer code: it carries a revision this code does not know."""


class SchemaOutdated(StoreError):
    """A store opened read-only has no schema yet, or an older one: it cannot be migrated."""


class ReadOnlyStore(StoreError):
    """A write was asked of a store opened read-only."""


# SQLSTATE classes of a database that is away or busy, not of a bad row: connection exception
# (08), transaction rollback (40: serialization failure, deadlock), insufficient resources (53:
# disk full, too many connections), operator intervention (57: admin shutdown, cannot connect
# now), system error (58), and "lock not available".
_OUTAGE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_OUTAGE_STATES = frozenset({"55P03", "55006"})
# SQLite result codes (their primary part) of the same kind: busy, locked, I/O, cannot open,
# full, protocol (WAL lock race), out of memory.
_SQLITE_OUTAGES = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN",
                   "SQLITE_FULL", "SQLITE_PROTOCOL", "SQLITE_NOMEM")


def is_outage(problem: BaseException) -> bool:
    """True when an append failed because the database is unreachable, shutting down, locked or
    busy (worth trying the same append again later), False when it failed on what it was given
    (a value the database cannot hold: no retry will ever store it as it is).

    SQLAlchemy's wrappers are looked through to the driver's error: PostgreSQL errors are told
    by their SQLSTATE (none at all: the client lost or never had its connection), SQLite's by
    their result code."""
    import sqlalchemy.exc as sa_exc  # lazily: keeps this module importable on its own

    if isinstance(problem, StoreUnavailable | ConnectionError | TimeoutError):
        return True
    if isinstance(problem, sa_exc.DBAPIError):
        if problem.connection_invalidated:
            return True
        problem = problem.orig or problem
    if isinstance(problem, sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return True
    sqlite_code = getattr(problem, "sqlite_errorname", None)
    if isinstance(sqlite_code, str):
        return sqlite_code.startswith(_SQLITE_OUTAGES)
    module = type(problem).__module__
    if module.startswith("psycopg"):
        state = getattr(problem, "sqlstate", None)
        if state is None:  # raised by the client: connection refused, lost, closed
            return type(problem).__name__ in ("OperationalError", "InterfaceError")
        return state[:2] in _OUTAGE_CLASSES or state in _OUTAGE_STATES
    if module == "sqlite3":  # an older sqlite3 without result codes: read the message
        text = str(problem)
        return type(problem).__name__ == "OperationalError" and (
            "locked" in text or "busy" in text or "unable to open" in text
            or "disk" in text)
    return False
