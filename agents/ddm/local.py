"""The embedded DDM: a persistent local file catalog with Rucio's semantics.

One SQLite file in the catalog directory holds datasets, file DIDs, replicas and dataset
contents. What Rucio refuses, this refuses with the same exception name (``DdmError.kind``):
a second ``add_dataset`` of a name (DataIdentifierAlreadyExists), an attach to a closed dataset
(UnsupportedOperation), a replica without an 8-hex-digit adler32 or a non-negative integer size
(InvalidObject), a file attached twice (FileAlreadyExists, unless ``ignore_duplicate``), closing a
closed dataset (UnsupportedOperation). Re-adding an existing replica is accepted and keeps the
original size and checksum, as Rucio does.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from agents.base import Adapter, Command
from agents.ddm import (
    MAX_ITEMS_PER_CALL,
    DdmError,
    did,
    metadata_problem,
    name_problem,
    replica_problem,
    scope_problem,
)

log = logging.getLogger(__name__)

DB_NAME = "catalog.db"
DEFAULT_RSE = "DAQ_DISK"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dids (
    scope TEXT NOT NULL, name TEXT NOT NULL,
    did_type TEXT NOT NULL,              -- 'dataset' or 'file'
    is_open INTEGER,                     -- datasets only
    bytes INTEGER, adler32 TEXT,         -- files only
    metadata TEXT NOT NULL DEFAULT '{}', -- DID-column metadata (run_number, ...)
    PRIMARY KEY (scope, name));
CREATE TABLE IF NOT EXISTS replicas (
    rse TEXT NOT NULL, scope TEXT NOT NULL, name TEXT NOT NULL,
    bytes INTEGER NOT NULL, adler32 TEXT NOT NULL, pfn TEXT,
    PRIMARY KEY (rse, scope, name));
CREATE TABLE IF NOT EXISTS contents (
    scope TEXT NOT NULL, name TEXT NOT NULL, child_scope TEXT NOT NULL, child_name TEXT NOT NULL,
    PRIMARY KEY (scope, name, child_scope, child_name));
"""


class LocalCatalog(Adapter):
    """Adapter ``ddm``: actions add_dataset, attach, close, list_files, set_metadata."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        # One connection shared by the runtime's worker threads, serialized by a lock.
        self._conn = sqlite3.connect(self.path / DB_NAME, timeout=30, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        self._actions: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
            "add_dataset": self._do_add_dataset,
            "attach": self._do_attach,
            "close": self._do_close,
            "list_files": self._do_list_files,
            "set_metadata": self._do_set_metadata,
        }

    def close_connection(self) -> None:
        with self._lock:
            self._conn.close()

    # --- the Adapter contract ------------------------------------------------------------

    def execute(self, command: Command) -> dict[str, Any]:
        """Run one command; catalog refusals become ``outcome="error"`` with Rucio's text."""
        reply = dict(command.reply)
        action = self._actions.get(command.action)
        try:
            if action is None:
                raise DdmError("UnsupportedOperation", f"unknown ddm action {command.action!r}")
            reply.update(action(command.params))
        except DdmError as problem:
            reply.update(outcome="error", error=str(problem))
        except sqlite3.Error as problem:  # the catalog's own storage failed: still a fact
            log.exception("local catalog storage error on %s", command.action)
            reply.update(outcome="error", error=f"DatabaseException: {problem}")
        if reply.get("outcome") == "error":  # recorded in the reply; the agent decides on it
            log.info("ddm %s refused: %s", command.action, reply.get("error"))
        return reply

    def _do_add_dataset(self, params: Mapping[str, Any]) -> dict[str, Any]:
        scope, name = params.get("scope"), params.get("name", params.get("dataset"))
        try:
            self.add_dataset(scope, name, params.get("metadata") or {})
        except DdmError as problem:
            if problem.kind != "DataIdentifierAlreadyExists":
                raise
            # Rucio's refusal is kept as the error text; the adapter adds whether the existing
            # dataset is still usable (open), so a retried run can go on attaching to it.
            info = self.get_dataset(scope, name)
            return {"outcome": "exists", "error": str(problem), "is_open": info["is_open"],
                    "file_count": info["file_count"], "size_bytes": info["size_bytes"]}
        return {"outcome": "ok", "error": None, "is_open": True}

    def _do_attach(self, params: Mapping[str, Any]) -> dict[str, Any]:
        files = params.get("files")
        if not isinstance(files, list):
            raise DdmError("InvalidObject", f"files must be a list, got {files!r}")
        attached = self.attach(params.get("scope"), params.get("dataset"), files,
                               rse=params.get("rse") or DEFAULT_RSE,
                               ignore_duplicate=bool(params.get("ignore_duplicate")))
        if files and not attached:
            target = did(params["scope"], params["dataset"])
            return {"outcome": "duplicate", "error": None, "attached": 0,
                    "reason": f"already attached to {target}; not registered again"}
        return {"outcome": "ok", "error": None, "attached": len(attached)}

    def _do_close(self, params: Mapping[str, Any]) -> dict[str, Any]:
        file_count, size = self.close(params.get("scope"), params.get("dataset"))
        return {"outcome": "ok", "error": None, "file_count": file_count, "size_bytes": size}

    def _do_list_files(self, params: Mapping[str, Any]) -> dict[str, Any]:
        files = self.list_files(params.get("scope"), params.get("dataset"))
        return {"outcome": "ok", "error": None, "files": files, "file_count": len(files),
                "size_bytes": sum(file["bytes"] for file in files)}

    def _do_set_metadata(self, params: Mapping[str, Any]) -> dict[str, Any]:
        self.set_metadata(params.get("scope"), params.get("name", params.get("dataset")),
                          params.get("key"), params.get("value"))
        return {"outcome": "ok", "error": None}

    # --- the catalog (Rucio-like API; raises DdmError) -----------------------------------

    def add_dataset(self, scope: Any, name: Any, metadata: Mapping[str, Any] | None = None
                    ) -> None:
        _check_did(scope, name)
        meta = dict(metadata or {})
        for key, value in meta.items():
            problem = metadata_problem(key, value)
            if problem:
                raise DdmError("InvalidMetadata", problem)
        with self._lock, self._conn:
            try:
                self._conn.execute(
                    "INSERT INTO dids (scope, name, did_type, is_open, metadata) "
                    "VALUES (?, ?, 'dataset', 1, ?)", (scope, name, orjson.dumps(meta).decode()))
            except sqlite3.IntegrityError:
                raise DdmError("DataIdentifierAlreadyExists",
                               f"data identifier '{did(scope, name)}' already exists") from None
        log.info("dataset %s added", did(scope, name))

    def add_replicas(self, rse: str, scope: Any, files: Iterable[Mapping[str, Any]]) -> None:
        """Files in Rucio's shape (name, bytes, adler32, pfn) or ours (size_bytes, checksum,
        file_url)."""
        replicas = [_replica(file) for file in files]
        with self._lock, self._conn:
            self._add_replicas(rse, scope, replicas)

    def attach(self, scope: Any, name: Any, files: Iterable[Any], *,
               rse: str = DEFAULT_RSE, ignore_duplicate: bool = False) -> list[str]:
        """add_replicas + attach_dids in one transaction; returns the names newly attached."""
        _check_did(scope, name)
        files = [_replica(file) for file in files]
        if len(files) > MAX_ITEMS_PER_CALL:
            raise DdmError("InvalidObject", f"{len(files)} files in one call; at most "
                                            f"{MAX_ITEMS_PER_CALL}")
        with self._lock, self._conn:
            row = self._dataset_row(scope, name)
            if not row[1]:
                raise DdmError("UnsupportedOperation",
                               f"data identifier '{did(scope, name)}' is closed")
            self._add_replicas(rse, scope, files)
            attached: list[str] = []
            for file in files:
                exists = self._conn.execute(
                    "SELECT 1 FROM contents WHERE scope=? AND name=? AND child_scope=? "
                    "AND child_name=?", (scope, name, scope, file["name"])).fetchone()
                if exists and ignore_duplicate:
                    continue
                if exists:
                    raise DdmError("FileAlreadyExists", f"file '{did(scope, file['name'])}' is "
                                                        f"already attached to '{did(scope, name)}'")
                if file["name"] in attached:  # the same file twice in one call: once is enough
                    continue
                self._conn.execute("INSERT INTO contents VALUES (?, ?, ?, ?)",
                                   (scope, name, scope, file["name"]))
                attached.append(file["name"])
        return attached

    def close(self, scope: Any, name: Any) -> tuple[int, int]:
        """set_status(open=False); returns the closed dataset's file count and total bytes."""
        _check_did(scope, name)
        with self._lock, self._conn:
            row = self._dataset_row(scope, name)
            if not row[1]:
                raise DdmError("UnsupportedOperation", f"the status of the data identifier "
                                                       f"'{did(scope, name)}' cannot be changed")
            self._conn.execute("UPDATE dids SET is_open=0 WHERE scope=? AND name=?",
                               (scope, name))
            count, size = self._totals(scope, name)
        log.info("dataset %s closed with %d files, %d bytes", did(scope, name), count, size)
        return count, size

    def set_metadata(self, scope: Any, name: Any, key: Any, value: Any) -> None:
        _check_did(scope, name)
        problem = metadata_problem(key, value)
        if problem:
            raise DdmError("InvalidMetadata", problem)
        with self._lock, self._conn:
            row = self._conn.execute("SELECT metadata FROM dids WHERE scope=? AND name=?",
                                     (scope, name)).fetchone()
            if row is None:
                raise DdmError("DataIdentifierNotFound",
                               f"data identifier '{did(scope, name)}' not found")
            meta = orjson.loads(row[0])
            meta[key] = value
            self._conn.execute("UPDATE dids SET metadata=? WHERE scope=? AND name=?",
                               (orjson.dumps(meta).decode(), scope, name))

    def get_dataset(self, scope: Any, name: Any) -> dict[str, Any]:
        _check_did(scope, name)
        with self._lock:
            row = self._dataset_row(scope, name)
            count, size = self._totals(scope, name)
        return {"scope": scope, "name": name, "is_open": bool(row[1]),
                "metadata": orjson.loads(row[2]), "file_count": count, "size_bytes": size}

    def list_files(self, scope: Any, name: Any) -> list[dict[str, Any]]:
        """The dataset's files (name order) with the catalog's size and checksum."""
        _check_did(scope, name)
        with self._lock:
            self._dataset_row(scope, name)
            rows = self._conn.execute(
                "SELECT d.scope, d.name, d.bytes, d.adler32 FROM contents c JOIN dids d "
                "ON d.scope=c.child_scope AND d.name=c.child_name "
                "WHERE c.scope=? AND c.name=? ORDER BY d.name", (scope, name)).fetchall()
        return [{"scope": r[0], "name": r[1], "bytes": r[2], "adler32": r[3]} for r in rows]

    def list_replicas(self, scope: str, name: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT rse, bytes, adler32, pfn FROM replicas WHERE scope=? AND name=? "
                "ORDER BY rse", (scope, name)).fetchall()
        return [{"rse": r[0], "bytes": r[1], "adler32": r[2], "pfn": r[3]} for r in rows]

    # --- internals (called with the lock held) -------------------------------------------

    def _dataset_row(self, scope: str, name: str) -> tuple[str, int, str]:
        row = self._conn.execute("SELECT did_type, is_open, metadata FROM dids "
                                 "WHERE scope=? AND name=?", (scope, name)).fetchone()
        if row is None:
            raise DdmError("DataIdentifierNotFound",
                           f"data identifier '{did(scope, name)}' not found")
        if row[0] != "dataset":
            raise DdmError("UnsupportedOperation",
                           f"data identifier '{did(scope, name)}' is a {row[0]}, not a dataset")
        return row

    def _totals(self, scope: str, name: str) -> tuple[int, int]:
        count, size = self._conn.execute(
            "SELECT count(*), coalesce(sum(d.bytes), 0) FROM contents c JOIN dids d "
            "ON d.scope=c.child_scope AND d.name=c.child_name WHERE c.scope=? AND c.name=?",
            (scope, name)).fetchone()
        return int(count), int(size)

    def _add_replicas(self, rse: str, scope: Any, files: Sequence[Mapping[str, Any]]) -> None:
        problem = scope_problem(scope)
        if problem:
            raise DdmError("InvalidObject", problem)
        for file in files:
            problem = replica_problem(file)
            if problem:
                raise DdmError("InvalidObject", f"replica {file.get('name')!r}: {problem}")
        for file in files:
            # An existing file DID or replica keeps its original size and checksum (as in Rucio).
            existing = self._conn.execute("SELECT did_type FROM dids WHERE scope=? AND name=?",
                                          (scope, file["name"])).fetchone()
            if existing is None:
                self._conn.execute(
                    "INSERT INTO dids (scope, name, did_type, bytes, adler32) "
                    "VALUES (?, ?, 'file', ?, ?)",
                    (scope, file["name"], file["bytes"], file["adler32"]))
            elif existing[0] != "file":
                raise DdmError("UnsupportedOperation", f"data identifier "
                               f"'{did(scope, file['name'])}' is a {existing[0]}, not a file")
            self._conn.execute(
                "INSERT OR IGNORE INTO replicas VALUES (?, ?, ?, ?, ?, ?)",
                (rse, scope, file["name"], file["bytes"], file["adler32"],
                 file.get("pfn")))


def _check_did(scope: Any, name: Any) -> None:
    problem = scope_problem(scope) or name_problem(name)
    if problem:
        raise DdmError("InvalidObject", problem)


def _replica(file: Any) -> dict[str, Any]:
    """Our file shape (name, size_bytes, checksum, file_url) in Rucio's (bytes, adler32, pfn)."""
    if not isinstance(file, Mapping):
        raise DdmError("InvalidObject", f"a file must be an object, got {file!r}")
    return {"name": file.get("name"),
            "bytes": file.get("bytes", file.get("size_bytes")),
            "adler32": file.get("adler32", file.get("checksum")),
            "pfn": file.get("pfn", file.get("file_url"))}
