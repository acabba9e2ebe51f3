"""Workflow configs: the shipped TOML, --set coercion, validation errors."""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest

from agents.config import SCHEMA, ConfigError, load_workflow, param, resolve, shipped_workflows


def test_shipped_fast_processing_has_the_seed_keys_and_values() -> None:
    text = (resources.files("agents") / "workflows" / "fast_processing_default.toml").read_text()
    raw = tomllib.loads(text)
    assert raw["testbed"] == {"namespace": "torre2"}
    assert raw["agents"] == {"data": {"enabled": True}, "fastmon": {"enabled": True},
                             "fast_processing": {"enabled": True}}
    assert raw["fast_processing"] == {"stf_count": 10, "physics_period_count": 1,
                                      "target_worker_count": 30, "stf_sampling_rate": 1.0,
                                      "slices_per_sample": 15, "slice_processing_time": 30}
    assert set(raw) == {"testbed", "agents", "fast_processing", "daq", "fastmon"}
    assert raw["fastmon"] == {"tf_count_per_stf": 1000, "tf_size_fraction": 0.15,
                              "tf_files_per_stf": 1}
    assert set(raw["daq"]) == {"imminent_delay", "stf_interval", "standby_duration",
                               "stf_size_bytes"}


def test_shipped_workflows_are_listed_and_resolve() -> None:
    assert "fast_processing" in shipped_workflows()
    config = load_workflow()
    assert config.workflow == "fast_processing"
    assert config.get("testbed.namespace") == "torre2"
    assert config.get("workers.failure_fraction") == 0.0  # a built-in default
    assert config.enabled("fastmon") and not config.enabled("processing")


def test_set_overrides_are_coerced_by_the_settings_type() -> None:
    config = load_workflow("fast_processing", [
        "fast_processing.stf_count=20", "fast_processing.stf_sampling_rate=0.5",
        "fast_processing.slice_processing_time=2.5", "agents.fastmon.enabled=no",
        "workers.payload_command=echo hi", "daq.stf_interval=1", "testbed.namespace=x"])
    assert config.get("fast_processing.stf_count") == 20
    assert config.get("fast_processing.stf_sampling_rate") == 0.5
    assert config.get("fast_processing.slice_processing_time") == 2.5
    assert config.get("agents.fastmon.enabled") is False
    assert config.get("workers.payload_command") == "echo hi"
    assert config.get("daq.stf_interval") == 1
    assert config.get("testbed.namespace") == "x"


@pytest.mark.parametrize(("override", "message"), [
    ("fast_processing.stf_cnt=3", "did you mean 'fast_processing.stf_count'"),
    ("fast_processing.stf_count=ten", "expected an integer"),
    ("fast_processing.stf_count=1.5", "expected an integer"),
    ("agents.data.enabled=maybe", "expected true or false"),
    ("fast_processing.stf_sampling_rate=1.5", "must be between 0 and 1"),
    ("fast_processing.stf_count=0", "must be > 0"),
    ("fast_processing.stf_count", "expected section.key=value"),
    ("nosuch.key=1", "unknown setting"),
])
def test_bad_overrides_are_clear_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_workflow("fast_processing", [override])


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_workflow("fast_processing", ["fast_processing.stf_count=x", "workers.nope=1"])
    assert len(str(caught.value).splitlines()) == 2


def test_unknown_workflow_and_bad_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown workflow 'nope'.*fast_processing"):
        load_workflow("nope")
    with pytest.raises(ConfigError, match="cannot read workflow file"):
        load_workflow(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[testbed\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_workflow(broken)
    typed = tmp_path / "typed.toml"
    typed.write_text('[fast_processing]\nstf_count = "ten"\n')
    with pytest.raises(ConfigError, match="stf_count must be an integer"):
        load_workflow(typed)


def test_a_file_names_its_workflow_by_stem_or_testbed_key(tmp_path) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text('[testbed]\nworkflow = "fast_processing"\n'
                    "[agents.fast_processing]\nenabled = true\n"
                    "[fast_processing]\nstf_count = 2\n")
    config = load_workflow(mine, ["fast_processing.slices_per_sample=4"])
    assert config.workflow == "fast_processing"
    assert config.get("fast_processing.stf_count") == 2
    assert config.get("fast_processing.target_worker_count") == 30
    assert config.get("workers.fail_attempts") == 0
    other = tmp_path / "quick_default.toml"
    other.write_text("[agents.data]\nenabled = true\n")
    quick = load_workflow(other, ["quick.stf_count=3"])
    assert quick.workflow == "quick" and quick.get("quick.stf_count") == 3
    assert "fastmon" not in quick.params  # sections of disabled agents are not filled in


def test_keys_of_other_sections_take_their_type_from_the_file() -> None:
    # (a section outside the schema: [processing] has joined it, see the test below)
    config = resolve({"extras": {"close_timeout": 60, "site": "E1"}},
                     default_workflow="prompt_processing",
                     overrides=["extras.close_timeout=5", "extras.site=E2"])
    assert config.get("extras.close_timeout") == 5
    assert config.get("extras.site") == "E2"
    with pytest.raises(ConfigError, match="expected an integer"):
        resolve({"extras": {"close_timeout": 60}}, default_workflow="p",
                overrides=["extras.close_timeout=soon"])


def test_processing_parameters_are_checked_at_start_and_defaulted() -> None:
    config = load_workflow("prompt_processing", ["processing.close_timeout=5.5"])
    assert config.get("processing.close_timeout") == 5.5
    assert config.get("processing.nickname") == "swf"
    enabled = resolve({"agents": {"processing": {"enabled": True}}}, default_workflow="mine")
    assert enabled.params["processing"] == {key: setting.default for key, setting
                                            in SCHEMA["processing"].items()}
    for override, problem in (("processing.close_timeout=soon", "expected a number"),
                              ("processing.poll_interval=-1", "must be >= 0"),
                              ("processing.site=", "must be a non-empty string"),
                              ("processing.sight=E1", "did you mean 'processing.site'")):
        with pytest.raises(ConfigError, match=problem):
            load_workflow("prompt_processing", [override])


def test_param_replaces_another_senders_unusable_value_by_the_default(
        caplog: pytest.LogCaptureFixture) -> None:
    assert param({"processing": {"close_timeout": "soon"}}, "processing.close_timeout") == 60.0
    assert param({"processing": {"close_timeout": -1}}, "processing.close_timeout") == 60.0
    assert param({"processing": {"close_timeout": 5}}, "processing.close_timeout") == 5
    assert param({"fastmon": {"tf_count_per_stf": 7.0}}, "fastmon.tf_count_per_stf") == 7
    assert [record.getMessage() for record in caplog.records] == [
        "processing.close_timeout = 'soon' is not usable (must be a number); using 60.0",
        "processing.close_timeout = -1 is not usable (must be >= 0); using 60.0"]


def test_param_falls_back_to_defaults() -> None:
    assert param({}, "fastmon.tf_count_per_stf") == 1000
    assert param(None, "prompt_processing.stf_count") == 10
    assert param({"fastmon": {"tf_count_per_stf": 7}}, "fastmon.tf_count_per_stf") == 7


# Upstream's workflow TOMLs as swf-testbed ships them (workflows/*.toml): refused before a run
# starts, naming every construct swf does not run, instead of a silent partial run.
UPSTREAM_FAST = """
[testbed]
namespace = "torre2"

[workflow]
name = "fast_processing"
version = "1.0"
description = "Fast processing of TF slices by PanDA/iDDS"
includes = ["daq_state_machine.toml"]

[agents.data]
enabled = true
script = "example_agents/example_data_agent.py"

[agents.fast_processing]
enabled = true

[fast_processing]
stf_count = 10
worker_rampup_time = 300
"""
UPSTREAM_PROMPT = """
[testbed]
namespace = "test-user"

[workflow]
name = "prompt_processing"
config = "prompt_processing_default"

[daq_state_machine]
stf_interval = 2.0

[agents.stf-data]
enabled = true

[simulation]
stf_count = 3
realtime = true
"""


def test_upstream_workflow_files_are_refused_naming_what_is_not_supported(tmp_path) -> None:
    fast = tmp_path / "fast_processing_default.toml"
    fast.write_text(UPSTREAM_FAST)
    with pytest.raises(ConfigError) as raised:
        load_workflow(fast)
    lines = str(raised.value).splitlines()
    assert len(lines) == 3 and all(line.startswith(str(fast)) for line in lines)
    assert "[workflow] includes = ['daq_state_machine.toml'] is not supported" in lines[0]
    assert "agents.data.script" in lines[1]
    assert "[fast_processing] worker_rampup_time is not a setting swf knows" in lines[2]
    prompt = tmp_path / "prompt_processing.toml"
    prompt.write_text(UPSTREAM_PROMPT)
    with pytest.raises(ConfigError) as raised:
        load_workflow(prompt)
    text = str(raised.value)
    for construct in ("[workflow] config = 'prompt_processing_default'",
                      "[daq_state_machine] is not supported", "[simulation] is not supported",
                      "[agents.stf-data] is not an swf agent"):
        assert construct in text


def test_what_swf_runs_of_an_upstream_file_runs_as_written(tmp_path) -> None:
    """Without the unsupported constructs, [workflow] name names the workflow and every
    setting given is one swf uses."""
    kept = "\n".join(line for line in UPSTREAM_FAST.splitlines()
                     if not line.startswith(("includes", "script", "worker_rampup")))
    path = tmp_path / "mine.toml"
    path.write_text(kept)
    config = load_workflow(path)
    assert config.workflow == "fast_processing"
    assert config.get("fast_processing.stf_count") == 10
    assert config.enabled("data") and config.enabled("fast_processing")
    assert "workflow" not in config.params  # upstream's metadata is not a parameter section


def test_upstream_toml_is_refused_by_swf_run_before_anything_runs(tmp_path) -> None:
    from click.testing import CliRunner

    from swf.cli import main

    path = tmp_path / "fast_processing_default.toml"
    path.write_text(UPSTREAM_FAST)
    db = tmp_path / "swf.db"
    result = CliRunner().invoke(main, ["run", str(path), "--db", f"sqlite:///{db}"])
    assert result.exit_code == 2
    assert "includes = ['daq_state_machine.toml'] is not supported" in result.output
    assert not db.exists()  # nothing started, nothing stored
