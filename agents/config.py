"""Workflow configuration: shipped TOML workflows, ``--set`` overrides, validation.

A workflow is a TOML file (``agents/workflows/{name}_default.toml`` or any path). Resolution:
the file, then ``--set section.key=value`` overrides (coerced to the setting's type), then the
defaults of every section the workflow uses, then range checks. The resolved dict, nested as
in the TOML, is what travels in ``run_imminent.workflow_params`` (plus ``seed``), so agents read
their parameters from the log, never from a file: through ``param``, which checks a value
against the schema (a sender may be another system) and falls back to the default.

This is the one mechanism for workflow parameters. Deployment settings (where the store, the
broker, Rucio and PanDA are; credentials) are the application shell's: swf/settings.py.
"""

from __future__ import annotations

import copy
import difflib
import logging
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WORKFLOW_SUFFIX = "_default.toml"
AGENT_SECTIONS = ("data", "fastmon", "fast_processing", "processing")


class ConfigError(ValueError):
    """A workflow file or override is wrong; the message says where and why, on one line each."""


@dataclass(frozen=True, slots=True)
class Setting:
    default: Any
    kind: type  # bool, int, float, str or list
    check: Callable[[Any], bool] | None = None
    rule: str = ""  # the check in words, for the error message


def _positive(value: Any) -> bool:
    return value > 0


def _non_negative(value: Any) -> bool:
    return value >= 0


def _fraction(value: Any) -> bool:
    return 0.0 <= value <= 1.0


def _open_fraction(value: Any) -> bool:
    return 0.0 < value <= 1.0


def _non_empty(value: Any) -> bool:
    return bool(value.strip())


_POS, _NONNEG = (_positive, "> 0"), (_non_negative, ">= 0")
_FRACTION, _OPEN_FRACTION = (_fraction, "between 0 and 1"), (_open_fraction, "in (0, 1]")
_TEXT = (_non_empty, "a non-empty string")

# The run shape, read by the DAQ simulator from the workflow's own section (the seed puts it in
# [fast_processing]; prompt_processing keeps it in [prompt_processing]).
RUN_SHAPE: dict[str, Setting] = {
    "stf_count": Setting(10, int, *_POS),
    "physics_period_count": Setting(1, int, *_POS),
}

SCHEMA: dict[str, dict[str, Setting]] = {
    "testbed": {
        "namespace": Setting("swf", str, *_TEXT),
        "workflow": Setting(None, str),  # optional: the workflow name when the file stem is not
    },
    "runtime": {
        "heartbeat_interval": Setting(60.0, float, *_POS),  # seconds of (simulated) time
    },
    "daq": {
        "imminent_delay": Setting(1.0, float, *_NONNEG),  # run_imminent -> start_run
        "stf_interval": Setting(3.0, float, *_POS),  # between STFs, and last STF -> pause/end
        "standby_duration": Setting(10.0, float, *_NONNEG),  # pause_run -> resume_run
        "stf_size_bytes": Setting(4096, int, *_NONNEG),
    },
    "fastmon": {
        "tf_count_per_stf": Setting(1000, int, *_POS),
        "tf_size_fraction": Setting(0.15, float, *_OPEN_FRACTION),
        "tf_files_per_stf": Setting(1, int, *_POS),
    },
    "fast_processing": {
        **RUN_SHAPE,
        "target_worker_count": Setting(30, int, *_POS),
        "stf_sampling_rate": Setting(1.0, float, *_FRACTION),
        "slices_per_sample": Setting(15, int, *_POS),
        "slice_processing_time": Setting(30, float, *_NONNEG),
    },
    "workers": {
        "failure_fraction": Setting(0.0, float, *_FRACTION),  # seeded, per (slice, attempt)
        "fail_attempts": Setting(0, int, *_NONNEG),  # every slice's first N attempts fail
        "payload_command": Setting("", str),  # empty: the built-in placeholder payload
        "payload_timeout": Setting(600.0, float, *_POS),
    },
    "processing": {  # the processing agent (prompt processing): one dataset and task per run
        "scope": Setting("group.daq", str, *_TEXT),  # DDM scope of the run datasets
        "rse": Setting("DAQ_DISK", str, *_TEXT),  # where the STF replicas are registered
        "close_timeout": Setting(60.0, float, *_NONNEG),  # after end_run, for missing files
        "poll_interval": Setting(10.0, float, *_NONNEG),  # between task status polls
        "site": Setting("E1_BNL", str, *_TEXT),
        "vo": Setting("epic", str, *_TEXT),
        "working_group": Setting("EIC", str, *_TEXT),
        "prod_source_label": Setting("test", str, *_TEXT),
        "nickname": Setting("swf", str, *_TEXT),  # output dataset user.{nickname}.swf.{run}...
        "payload": Setting("builtin", str, *_TEXT),  # "builtin" or a shell command (SWF_* env)
    },
}
_AGENT_ENABLED = Setting(False, bool)


@dataclass(frozen=True, slots=True)
class WorkflowConfig:
    workflow: str
    source: str  # where it came from: a shipped name or a path
    params: dict[str, Any]  # resolved, nested as in the TOML

    def get(self, path: str) -> Any:
        return param(self.params, path)

    def enabled(self, agent: str) -> bool:
        return bool(self.params.get("agents", {}).get(agent, {}).get("enabled", False))


def shipped_workflows() -> dict[str, str]:
    """Shipped workflow name -> TOML text."""
    folder = resources.files("agents") / "workflows"
    found = {}
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(WORKFLOW_SUFFIX):
            found[entry.name[: -len(WORKFLOW_SUFFIX)]] = entry.read_text(encoding="utf-8")
    return found


def load_workflow(spec: str | Path = "fast_processing", overrides: Iterable[str] = ()
                  ) -> WorkflowConfig:
    """Load a shipped workflow by name or a TOML file by path, apply ``--set`` overrides."""
    text, source, stem = _read_source(spec)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as problem:
        raise ConfigError(f"{source}: not valid TOML: {problem}") from None
    return resolve(raw, source=source, default_workflow=stem, overrides=overrides)


def resolve(raw: Mapping[str, Any], *, source: str = "<config>", default_workflow: str = "",
            overrides: Iterable[str] = ()) -> WorkflowConfig:
    params = copy.deepcopy(dict(raw))
    # Refused before anything runs: never a run that silently leaves settings out.
    problems = _not_supported(params, source)
    upstream = params.pop("workflow", None)
    named = upstream.get("name") if isinstance(upstream, Mapping) else None
    workflow = str(params.get("testbed", {}).get("workflow") or named or default_workflow)
    if not workflow:
        raise ConfigError("\n".join([*problems,
                                     f"{source}: no workflow name: set [testbed] workflow"]))
    _check_keys(params, workflow, source, problems)
    if problems:
        raise ConfigError("\n".join(problems))
    _check_types(params, workflow, source, problems)
    for override in overrides:
        _apply_override(params, workflow, override, problems)
    if problems:
        raise ConfigError("\n".join(problems))
    for section in _sections_in_use(params, workflow):
        _fill_defaults(params.setdefault(section, {}), _schema_of(section, workflow))
    agents = params.setdefault("agents", {})
    for name in AGENT_SECTIONS:
        agents.setdefault(name, {}).setdefault("enabled", False)
    _check_ranges(params, workflow, problems)
    if problems:
        raise ConfigError("\n".join(problems))
    return WorkflowConfig(workflow=workflow, source=source, params=params)


def param(params: Mapping[str, Any] | None, path: str, workflow: str | None = None) -> Any:
    """A resolved parameter by dotted path, else its schema default (for messages from senders
    that carry no or partial ``workflow_params``). A value the schema refuses (wrong type or
    out of range: only another sender's parameters can hold one) is logged and replaced by the
    default, so an agent never works with it."""
    node: Any = params or {}
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _default_for(path, workflow)
        node = node[part]
    setting = _setting(path, workflow or path.split(".")[0])
    if setting is None:
        return node
    integral = setting.kind is int and isinstance(node, float) and node.is_integer()
    value = _accept(int(node) if integral else node, setting.kind)
    problem = _KIND_WORDS[setting.kind] if value is _BAD else \
        setting.rule if setting.check is not None and not setting.check(value) else None
    if problem is None:
        return value
    log.warning("%s = %r is not usable (must be %s); using %r", path, node, problem,
                setting.default)
    return setting.default


def describe(config: WorkflowConfig) -> list[tuple[str, Any]]:
    """Flattened (dotted key, value) pairs, in file order, for ``swf workflows``."""
    return list(_flatten(config.params))


# -- internals ---------------------------------------------------------------------------------


def _read_source(spec: str | Path) -> tuple[str, str, str]:
    text_spec = str(spec)
    path = Path(text_spec)
    if text_spec.endswith(".toml") or path.exists() or "/" in text_spec:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as problem:
            raise ConfigError(f"cannot read workflow file {text_spec}: {problem.strerror}") \
                from None
        stem = path.name[: -len(WORKFLOW_SUFFIX)] if path.name.endswith(WORKFLOW_SUFFIX) \
            else path.stem
        return text, text_spec, stem
    shipped = shipped_workflows()
    if text_spec not in shipped:
        known = ", ".join(sorted(shipped)) or "none"
        raise ConfigError(f"unknown workflow {text_spec!r}; shipped workflows: {known} "
                          "(or give a path to a .toml file)")
    return shipped[text_spec], text_spec, text_spec


# What upstream's workflow TOMLs (swf-testbed workflows/*.toml, read by workflows/
# workflow_runner.py:329-368 and merged by stf_datataking.py:12-23) say that swf does not do.
_UPSTREAM_SECTIONS = {
    "daq_state_machine": "upstream's DAQ state-machine timing (no_beam_not_ready_delay, "
                         "beam_ready_delay, ...) is not what swf's DAQ simulator runs; set "
                         "[daq] imminent_delay, stf_interval, standby_duration instead",
    "simulation": "upstream's runner merges [simulation] into every section's parameters; "
                  "swf reads the run shape from the workflow's own section "
                  "([WORKFLOW] stf_count, physics_period_count)",
    "parameters": "upstream's runner overrides matching keys of every section with "
                  "[parameters]; swf takes overrides as --set section.key=value",
}
_WORKFLOW_KEYS = frozenset({"name", "version", "description"})  # metadata: read or harmless


def _not_supported(params: Mapping[str, Any], source: str) -> list[str]:
    """One line per upstream-only construct in the file, naming it and what to do instead."""
    problems: list[str] = []
    workflow = params.get("workflow")
    if workflow is not None and not isinstance(workflow, Mapping):
        problems.append(f"{source}: workflow = {workflow!r} is not supported: give the "
                        f"workflow name as [testbed] workflow")
    elif isinstance(workflow, Mapping):
        for key, value in workflow.items():
            if key == "includes":
                problems.append(
                    f"{source}: [workflow] includes = {value!r} is not supported: upstream's "
                    f"runner merges the included files; swf reads one file, so copy the "
                    f"settings into it")
            elif key not in _WORKFLOW_KEYS:
                problems.append(f"{source}: [workflow] {key} = {value!r} is not supported "
                                f"(swf reads only name, version, description there)")
    for section, why in _UPSTREAM_SECTIONS.items():
        if section in params:
            problems.append(f"{source}: [{section}] is not supported: {why}")
    agents = params.get("agents", {})
    if isinstance(agents, Mapping):
        for name, section in agents.items():
            if name not in AGENT_SECTIONS:
                problems.append(f"{source}: [agents.{name}] is not an swf agent (swf has "
                                f"{', '.join(AGENT_SECTIONS)}); nothing would run it")
            elif isinstance(section, Mapping) and "script" in section:
                problems.append(f"{source}: agents.{name}.script = {section['script']!r} is "
                                f"not supported: swf runs its own {name} agent, not a script")
    return problems


def _check_keys(params: Mapping[str, Any], workflow: str, source: str, problems: list[str]
                ) -> None:
    """Keys swf does not know in the sections whose settings it knows are errors, not
    silently ignored settings."""
    for section in {*SCHEMA, workflow}:
        values = params.get(section)
        if not isinstance(values, Mapping):
            continue
        known = _schema_of(section, workflow)
        if not known:
            continue
        for key in values:
            if key not in known:
                hint = difflib.get_close_matches(key, list(known), n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                problems.append(f"{source}: [{section}] {key} is not a setting swf knows "
                                f"(known: {', '.join(known)}){suggestion}")
    agents = params.get("agents", {})
    if isinstance(agents, Mapping):
        for name, section in agents.items():
            for key in (section if isinstance(section, Mapping) else {}):
                if key != "enabled" and key != "script":  # script: _not_supported
                    problems.append(f"{source}: agents.{name}.{key} is not a setting swf "
                                    f"knows (known: enabled)")


def _schema_of(section: str, workflow: str) -> dict[str, Setting]:
    schema = dict(SCHEMA.get(section, {}))
    if section == workflow:
        schema = {**RUN_SHAPE, **schema}
    return schema


def _setting(path: str, workflow: str) -> Setting | None:
    parts = path.split(".")
    if len(parts) == 3 and parts[0] == "agents" and parts[2] == "enabled":
        return _AGENT_ENABLED
    if len(parts) == 2:
        return _schema_of(parts[0], workflow).get(parts[1])
    return None


def _default_for(path: str, workflow: str | None) -> Any:
    parts = path.split(".")
    setting = _setting(path, workflow or parts[0])
    return setting.default if setting is not None else None


def _sections_in_use(params: Mapping[str, Any], workflow: str) -> list[str]:
    agents = params.get("agents", {})

    def on(name: str) -> bool:
        return bool(agents.get(name, {}).get("enabled", False))

    sections = ["testbed", "runtime", "daq", workflow]
    if on("fastmon"):
        sections.append("fastmon")
    if on("fast_processing"):
        sections += ["fast_processing", "workers"]
    if on("processing"):
        sections.append("processing")
    return list(dict.fromkeys(sections))


def _fill_defaults(section: dict[str, Any], schema: Mapping[str, Setting]) -> None:
    for key, setting in schema.items():
        if key not in section and setting.default is not None:
            section[key] = setting.default


def _check_types(params: dict[str, Any], workflow: str, source: str, problems: list[str]
                 ) -> None:
    for path, value in list(_flatten(params)):
        setting = _setting(path, workflow)
        if setting is None:
            continue
        coerced = _accept(value, setting.kind)
        if coerced is _BAD:
            problems.append(f"{source}: {path} must be {_KIND_WORDS[setting.kind]}, "
                            f"got {value!r}")
        else:
            _assign(params, path, coerced)


def _apply_override(params: dict[str, Any], workflow: str, override: str,
                    problems: list[str]) -> None:
    path, sep, text = override.partition("=")
    path = path.strip()
    if not sep or not path:
        problems.append(f"--set {override!r}: expected section.key=value")
        return
    setting = _setting(path, workflow)
    existing = _lookup(params, path)
    if setting is None and existing is _BAD:
        known = sorted({key for key, _ in _flatten(params)} | _known_paths(workflow))
        hint = difflib.get_close_matches(path, known, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        problems.append(f"--set {path}: unknown setting{suggestion}")
        return
    kind = setting.kind if setting is not None else type(existing)
    value = _parse(text.strip(), kind)
    if value is _BAD:
        problems.append(f"--set {path}={text}: expected {_KIND_WORDS.get(kind, kind.__name__)}")
        return
    _assign(params, path, value)


def _check_ranges(params: dict[str, Any], workflow: str, problems: list[str]) -> None:
    for path, value in _flatten(params):
        setting = _setting(path, workflow)
        if setting is not None and setting.check is not None and not setting.check(value):
            problems.append(f"{path} = {value!r}: must be {setting.rule}")


def _known_paths(workflow: str) -> set[str]:
    paths = {f"agents.{name}.enabled" for name in AGENT_SECTIONS}
    for section in {*SCHEMA, workflow}:
        paths |= {f"{section}.{key}" for key in _schema_of(section, workflow)}
    return paths


class _Bad:
    pass


_BAD: Any = _Bad()
_KIND_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list"}
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _accept(value: Any, kind: type) -> Any:
    """A TOML value checked against a kind (ints are fine where numbers are expected)."""
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if not isinstance(value, int) else value
    if kind is int and isinstance(value, bool):
        return _BAD
    return value if isinstance(value, kind) else _BAD


def _parse(text: str, kind: type) -> Any:
    """A ``--set`` value from the command line, as the setting's kind."""
    if kind is bool:
        lowered = text.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else _BAD
    if kind is int:
        try:
            return int(text)
        except ValueError:
            return _BAD
    if kind is float:
        try:
            number = float(text)
        except ValueError:
            return _BAD
        return int(number) if number.is_integer() and "." not in text and "e" not in \
            text.lower() else number
    if kind is list:
        try:
            value = tomllib.loads(f"value = {text}")["value"]
        except tomllib.TOMLDecodeError:
            value = [item.strip() for item in text.split(",") if item.strip()]
        return value if isinstance(value, list) else _BAD
    return text


def _lookup(params: Mapping[str, Any], path: str) -> Any:
    node: Any = params
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _BAD
        node = node[part]
    return node


def _assign(params: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = params
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[last] = value


def _flatten(node: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{path}.")
        else:
            yield path, value
