"""Alembic scripts of the projections (a package so that env.py ships in the wheel)."""
