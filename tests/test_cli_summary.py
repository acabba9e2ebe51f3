"""`swf run` and `swf query execution` render an execution summary the same way; the `swf`
group loads a command's module only when that command is asked for."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from swf.cli import main


def test_run_and_query_execution_print_the_same_summary(tmp_path) -> None:
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'swf.db'}"
    ran = runner.invoke(main, ["run", "prompt_processing", "--db", db,
                               "--data-dir", str(tmp_path / "data")], env={"SWF_USER": "tester"})
    assert ran.exit_code == 0, ran.output
    assert "datasets              group.daq:swf.100001.run closed (5 files" in ran.stdout
    queried = runner.invoke(main, ["query", "execution", "prompt_processing-tester-0001",
                                   "--db", db])
    assert queried.exit_code == 0, queried.output
    assert queried.stdout == ran.stdout
    as_json = runner.invoke(main, ["query", "execution", "prompt_processing-tester-0001",
                                   "--db", db, "--json"])
    assert as_json.stdout.startswith("{") and '"datasets": [' in as_json.stdout


def test_a_command_loads_only_its_own_module() -> None:
    # A fresh interpreter: what `swf run` imports before it runs (the console, the replay and
    # SQLAlchemy's PostgreSQL dialect are not among it).
    probe = ("import sys; from swf.cli import main; "
             "assert main.get_command(None, 'run') is not None; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('replay', 'fastapi', 'uvicorn') or m.startswith('swf.web') "
             "or m == 'sqlalchemy.dialects.postgresql'))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_command_is_listed_and_loads() -> None:
    names = main.list_commands(click.Context(main))
    assert {"run", "import", "query", "replay", "serve", "projections"} <= set(names)
    for name in names:
        command = main.get_command(click.Context(main), name)
        assert command is not None and command.name is not None, name
    assert {"messages", "rejected", "execution"} <= set(main.get_command(
        click.Context(main), "query").commands)  # type: ignore[union-attr]
