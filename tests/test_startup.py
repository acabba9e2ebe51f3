"""What a ``swf query`` command imports: only what answering it needs (issue 15). Its start-up is
most of its time, so a module that creeps back in (the broker clients through the settings, the
fold through the projector, alembic through the store check) should fail here, not go unseen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from eventstore.store import EventStore
from projections import Projector

REPO = Path(__file__).resolve().parent.parent
NOT_FOR_A_QUERY = ("alembic", "stomp", "tenacity", "tomllib", "configparser", "difflib",
                   "agents.recorder", "agents.config", "agents.transport",
                   "projections.fold", "projections.source", "projections.derive",
                   "projections.load")


def test_a_query_command_imports_neither_the_broker_clients_nor_the_fold(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'swf.db'}"
    with EventStore(url) as store:
        Projector(store)  # creates the tables: the command then finds them current
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print(' '.join(sorted(sys.modules)), file=sys.stderr))\n"
            "from swf.cli import run; run()")
    done = subprocess.run([sys.executable, "-c", code, "query", "runs", "--db", url],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO), "SWF_CONFIG": ""})
    assert done.returncode == 0, done.stderr
    loaded = set(done.stderr.split())
    assert "projections.queries" in loaded  # (the list is the command's)
    assert sorted(name for name in NOT_FOR_A_QUERY if name in loaded) == []
