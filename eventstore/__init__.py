"""The event store: persistence of the append-only log, and nothing else.

One job: every message becomes exactly one stored event, kept byte for byte, and read back in
commit order. The package imports nothing of ours (it is the bottom layer; projections, agents,
replay and swf build on it). Its modules:

- ``envelope``: what arrives (``Incoming``) and what is stored and read back (``Event``);
- ``catalog``: the message catalog - validation and read-time normalization;
- ``identity``: the one rule for an event's id and its inferred execution;
- ``schema`` and ``migrate`` (+ ``migrations/``): the table and its alembic history;
- ``engine``: database URLs and tuned engines (SQLite WAL, psycopg 3), read-only opening;
- ``store``: the ``EventStore`` facade over one recorder per backend (``sqlite``,
  ``postgres``), with the named reads of ``reads`` - nobody else writes SQL on ``events``.
"""

from .catalog import SCHEMA_VERSION, Verdict, examine
from .envelope import Event, Incoming

__all__ = ["SCHEMA_VERSION", "Event", "Incoming", "Verdict", "examine"]
