"""`swf run` and `swf query execution` render an execution summary the same way."""

from __future__ import annotations

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
