"""The cyclic garbage collector, paused around work that allocates many objects and no cycles.

An append, a rebuild and a replay allocate objects by the hundred thousand (parsed bodies,
events, records, rows) that reference counting frees; none of them form a cycle (keep it that
way). With the collector on, each young generation it scans keeps the objects still in use at
that moment: it promotes them, and the promotions then bring on full collections that rescan
every object of the process, for nothing (a third of a rebuild's time; up to 12% of a PostgreSQL
append's client CPU in the append benchmark, more in a process that holds more). The collector
stays as the caller set it outside the block.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_gc() -> Iterator[None]:
    """No cyclic collection inside the block. Free what the block made before it ends where
    that is possible: the first allocation after it scans every object allocated meanwhile
    that is still alive."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
