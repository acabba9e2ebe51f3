"""Alembic environment of the event store (version table ``swf_schema_eventstore``)."""

from alembic import context

from eventstore.migrate import run_migrations
from eventstore.schema import metadata

run_migrations(context, metadata)
