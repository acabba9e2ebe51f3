"""The store's own errors; each message is one line, fit to print without a traceback."""

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
