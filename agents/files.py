"""The "files" adapter: writes simulated STF files and reads their size and adler32.

Paths and URLs in commands are relative to the adapter's data directory (``100001/x.stf``), as
the messages name them (agents/dataroot.py); an absolute ``file://`` URL (an upstream sender's)
is read where it points.
"""

from __future__ import annotations

import logging
import random
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from agents.base import Adapter, Command, derive_id

log = logging.getLogger("swf.adapter.files")
_CHUNK = 1 << 20


def stf_content(seed: object, filename: str, size: int) -> bytes:
    """Deterministic file content: a header line, then bytes seeded by (seed, filename)."""
    header = f"SWF-STF {filename} seed={seed}\n".encode()
    if size <= len(header):
        return header[:size]
    return header + random.Random(derive_id(seed, filename)).randbytes(size - len(header))


def adler32_of(path: Path) -> tuple[int, str]:
    """(size in bytes, adler32 as 8 lowercase hex digits), read in chunks."""
    value, size = 1, 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            value = zlib.adler32(chunk, value)
            size += len(chunk)
    return size, f"{value & 0xFFFFFFFF:08x}"


def path_of(url: str, root: Path | None = None) -> Path:
    """The file a URL names: a ``file://`` URL or an absolute path as it is, a relative one
    under ``root`` (ValueError without a root, or for another scheme)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"not a file URL: {url}")
    path = Path(unquote(parsed.path))
    if path.is_absolute():
        return path
    if root is None:
        raise ValueError(f"{url} is relative and no data directory was given")
    return root / path


class FilesAdapter(Adapter):
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def execute(self, command: Command) -> dict[str, Any]:
        reply = dict(command.reply)
        params = command.params
        if command.action == "write_stf":
            try:
                path = path_of(str(params["path"]), self.root)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(stf_content(params.get("seed", 0), params["filename"],
                                             int(params.get("size", 0))))
            except (OSError, ValueError) as problem:
                reply["error"] = f"cannot write {params['path']}: " \
                    f"{getattr(problem, 'strerror', None) or problem}"
                log.warning("%s", reply["error"])
            return reply
        if command.action == "stat":
            try:
                reply["size_bytes"], reply["checksum"] = adler32_of(path_of(params["url"],
                                                                            self.root))
            except (OSError, ValueError) as problem:
                reply["size_bytes"] = reply["checksum"] = None
                reply["error"] = f"cannot read {params['url']}: " \
                    f"{getattr(problem, 'strerror', None) or problem}"
                log.warning("%s", reply["error"])
            return reply
        raise ValueError(f"files adapter: unknown action {command.action!r}")
