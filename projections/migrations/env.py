"""Alembic environment of the projections (version table ``swf_schema_projections``)."""

from alembic import context

from eventstore.migrate import run_migrations
from projections.tables import metadata

run_migrations(context, metadata)
