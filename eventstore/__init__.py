"""The append-only event store: envelope, message catalog, schema, append/read/follow."""

from .catalog import SCHEMA_VERSION, Verdict, examine
from .envelope import Event, Incoming

__all__ = ["SCHEMA_VERSION", "Event", "Incoming", "Verdict", "examine"]
