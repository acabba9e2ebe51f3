"""A store's data directory: where its STF files and its local DDM and batch state live.

Messages name files relative to the data directory (``file_url`` ``100001/swf.100001.000001.stf``),
so the same run gives the same bytes wherever its files are; the adapters resolve those names
against the directory they were given.

The directory belongs to one store: by default it sits beside the store's SQLite file and is
named after it (``runs/swf.db`` -> ``runs/swf-data``), so two stores never share one. A store
without a file (PostgreSQL, in-memory SQLite) has no default: the directory must be given. A
given directory is claimed for its store by a marker file holding the store's id; a directory
that another store claimed is refused at start, since the two would overwrite each other's files
and catalogs.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import sqlalchemy as sa

MARKER = ".swf-store"


class DataRootError(ValueError):
    """No usable data directory for the store; the message is one line."""


def default_data_root(store_url: str) -> Path | None:
    """The data directory beside a SQLite store file (None for any other store)."""
    try:
        url = sa.make_url(store_url)
    except sa.exc.ArgumentError:
        return None
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:" \
            or database.startswith("file:"):
        return None
    path = Path(database).absolute()
    return path.with_name(f"{path.stem}-data")


def resolve_data_root(given: str | os.PathLike[str] | None, store: object) -> Path:
    """The data directory for ``store`` (an ``EventStore``): ``given``, else the default beside
    its file; created and claimed for the store. Raises DataRootError."""
    engine = getattr(store, "engine", None)
    root = Path(given).absolute() if given is not None else (
        default_data_root(engine.url.render_as_string(hide_password=False))
        if engine is not None else None)
    if root is None:
        raise DataRootError("this store keeps no files of its own: give a data directory "
                            "(--data-dir, $SWF_DATA or [agent] data_dir in the config file)")
    store_id = getattr(store, "store_id", lambda: None)()
    if store_id is not None:
        claim(root, store_id)
    return root


def claim(root: Path, store_id: str) -> None:
    """Make ``root`` the data directory of the store ``store_id``, unless another store has it.

    The marker appears whole or not at all (written aside, then hard-linked into place, which
    fails if it exists): stores starting at once never read each other's half-written marker,
    and exactly one of them claims the directory."""
    marker = root / MARKER
    try:
        root.mkdir(parents=True, exist_ok=True)
        try:
            owner = marker.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            owner = _place_marker(marker, store_id)
    except OSError as problem:
        raise DataRootError(f"cannot use the data directory {root}: "
                            f"{problem.strerror or problem}") from None
    if owner != store_id:
        raise DataRootError(f"the data directory {root} belongs to another store ({owner}, "
                            f"see {marker}): give this store a data directory of its own")


def _place_marker(marker: Path, store_id: str) -> str:
    """Claim with ``store_id`` unless another store placed its marker first; the owner."""
    aside = marker.with_name(f"{MARKER}.{os.getpid()}.{threading.get_ident()}")
    aside.write_text(store_id + "\n", encoding="utf-8")
    try:
        os.link(aside, marker)
    except FileExistsError:
        return marker.read_text(encoding="utf-8").strip()
    finally:
        aside.unlink()
    return store_id
