"""Alembic scripts of the event store (a package so that env.py ships in the wheel)."""
