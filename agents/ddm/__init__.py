"""Data management (DDM): Rucio's rules, shared by the processing agent and the catalog adapters.

The rules are the ones a real Rucio server enforces (see the project notes on a local Rucio
server); both the embedded ``LocalCatalog`` and the agent's pre-checks use them, so a replica the
agent lets through is one Rucio would accept, and a rejection reads the same everywhere.
Errors are ``DdmError``s named after the Rucio exception they stand for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SCOPE_RE = re.compile(r"^[a-zA-Z_\-.0-9]+$")
SCOPE_MAX = 25
NAME_RE = re.compile(r"^[/A-Za-z0-9][/A-Za-z0-9.\-_]*$")
NAME_MAX = 250
ADLER32_RE = re.compile(r"^[a-fA-F0-9]{8}$")
MAX_ITEMS_PER_CALL = 1000  # Rucio caps lists at 1000 items per call

# Without Rucio's JSON metadata plugin (i.e. on SQLite) only DID-table columns can be set.
METADATA_COLUMNS: dict[str, type] = {
    "run_number": int, "events": int, "task_id": int, "panda_id": int, "lumiblocknr": int,
    "project": str, "datatype": str, "stream_name": str, "prod_step": str, "version": str,
    "campaign": str, "provenance": str, "phys_group": str, "guid": str,
}


class DdmError(Exception):
    """A catalog refusal; ``kind`` is the Rucio exception name, e.g. ``UnsupportedOperation``."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def did(scope: str, name: str) -> str:
    return f"{scope}:{name}"


def split_did(text: str, default_scope: str) -> tuple[str, str]:
    """``scope:name`` or a bare ``name`` (in ``default_scope``)."""
    scope, sep, name = text.partition(":")
    return (scope, name) if sep else (default_scope, text)


def scope_problem(scope: Any) -> str | None:
    if not isinstance(scope, str) or not scope:
        return f"scope must be a non-empty string, got {scope!r}"
    if len(scope) > SCOPE_MAX:
        return f"scope {scope!r} is longer than {SCOPE_MAX} characters"
    if not SCOPE_RE.match(scope):
        return f"scope {scope!r} does not match {SCOPE_RE.pattern}"
    return None


def name_problem(name: Any, what: str = "name") -> str | None:
    if not isinstance(name, str) or not name:
        return f"{what} must be a non-empty string, got {name!r}"
    if len(name) > NAME_MAX:
        return f"{what} {name[:40]!r}... is longer than {NAME_MAX} characters"
    if not NAME_RE.match(name):
        return f"{what} {name!r} does not match {NAME_RE.pattern}"
    return None


def replica_problem(file: Mapping[str, Any]) -> str | None:
    """Why Rucio would refuse this replica (``name``, ``bytes``, ``adler32``), or None.

    Rucio accepts any non-negative integer size (0 bytes and 1 GiB alike) and only an adler32
    of exactly 8 hex digits; an empty or missing checksum and a null size are refused.
    """
    problem = name_problem(file.get("name"), "file name")
    if problem:
        return problem
    size = file.get("bytes")
    if size is None:
        return "bytes is missing (null size); a replica needs a non-negative integer size"
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return f"bytes must be a non-negative integer, got {size!r}"
    checksum = file.get("adler32")
    if checksum is None or checksum == "":
        return "adler32 is missing (empty checksum); a replica needs 8 hex digits"
    if not isinstance(checksum, str) or not ADLER32_RE.match(checksum):
        return f"adler32 {checksum!r} does not match {ADLER32_RE.pattern}"
    return None


def metadata_problem(key: Any, value: Any) -> str | None:
    kind = METADATA_COLUMNS.get(key) if isinstance(key, str) else None
    if kind is None:
        return (f"metadata key {key!r} is not a DID column; arbitrary keys need Rucio's JSON "
                f"metadata plugin (PostgreSQL)")
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        return f"metadata {key!r} must be {kind.__name__}, got {value!r}"
    return None
