"""Live mode on a broker: ``swf agent NAME`` and ``swf run --broker``'s path (``swf record``:
record_command.py).

Each runs until SIGTERM or SIGINT (Ctrl-C) and then stops cleanly. Their settings come from
swf/settings.py (flags > environment > config file > defaults); one config file can serve all
of them (``--config PATH.toml`` or $SWF_CONFIG)::

    [broker]                   # credentials better in the environment (SWF_STOMP_PASSWORD)
    url = "stomp://127.0.0.1:61613"
    [store]
    url = "sqlite:///swf.db"
    [agent]                    # defaults for `swf agent`
    user = "swf"
    namespace = "torre2"
    heartbeat_interval = 60
    data_dir = "/data/swf"     # needed by daq, data and processing unless the store is a file
    [recorder]
    name = "swf-recorder"
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from agents.config import WorkflowConfig, load_workflow
from agents.transport.broker import BrokerConfig, BrokerConfigError
from swf.commands.group import SettingsProblem, config_option, db_flag, load, main
from swf.settings import Settings

# `swf agent NAME` -> agent type.
AGENT_NAMES = {"daq": "daq_simulator", "data": "data", "fastmon": "fastmon",
               "fast_processing": "fast_processing", "processing": "processing",
               "worker": "worker"}
# Agents whose adapters keep files in the store's data directory (STF files, local DDM/batch).
FILE_AGENTS = frozenset({"daq_simulator", "data", "processing"})
POLL = 0.25  # seconds between looks at the store while `swf run --broker` waits
START_TIMEOUT = 20.0  # seconds the DAQ agent has to show it took a run (all told: < 30 s)
AGENT_COMMANDS = {agent_type: name for name, agent_type in AGENT_NAMES.items()}


def broker_options(function: Callable[..., Any]) -> Callable[..., Any]:
    function = config_option(function)
    return click.option(
        "--broker", "broker_url", metavar="URL",
        help="STOMP broker, stomp://HOST:PORT or stomp+ssl://HOST:PORT (default: $SWF_BROKER, "
             "else ACTIVEMQ_HOST/ACTIVEMQ_PORT/ACTIVEMQ_USE_SSL, else [broker] url); "
             "credentials from SWF_STOMP_USER/SWF_STOMP_PASSWORD (or ACTIVEMQ_USER/"
             "ACTIVEMQ_PASSWORD) or the config file.")(function)


@main.command("agent")
@click.argument("agent", metavar="NAME", type=click.Choice(sorted(AGENT_NAMES)))
@broker_options
@db_flag
@click.option("--name", "instance", help="Instance name, the sender of its messages "
                                         "(default: [agent] name, else TYPE-agent-USER, as in "
                                         "`swf run`).")
@click.option("--user", help="The USER of the default name (default: $SWF_USER, else [agent] "
                             "user, else swf).")
@click.option("--namespace", help="Namespace to work in (default: [agent] namespace, else the "
                                  "default workflow's).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="The store's data directory: STF files, local DDM and batch state (daq, "
                   "data, processing; default: $SWF_DATA, else [agent] data_dir, else beside "
                   "the SQLite store file).")
@click.option("--heartbeat-interval", type=click.FloatRange(min=0, min_open=True),
              help="Seconds between heartbeats (default: [agent] heartbeat_interval, else 60).")
@click.option("--payload-threads", type=click.IntRange(min=1),
              help="Slice payloads run at the same time (worker; default: [agent] "
                   "payload_threads, else 32).")
@click.option("--sent-log", type=click.Path(dir_okay=False, path_type=Path),
              help="Append 'msg_id destination' for every message the broker confirmed "
                   "(an audit trail to hold against the store; default: [agent] sent_log).")
def agent_command(agent: str, broker_url: str | None, config_path: Path | None,
                  db_url: str | None, instance: str | None, user: str | None,
                  namespace: str | None,
                  data_dir: Path | None, heartbeat_interval: float | None,
                  payload_threads: int | None, sent_log: Path | None) -> None:
    """Run one agent (daq, data, fastmon, fast_processing, processing, worker) as this process,
    on the broker, until SIGTERM or Ctrl-C. It resumes from the store: the executions still
    open are replayed through it first. The daq agent starts a run when `swf run --broker`
    asks."""
    from agents.base import Agent
    from agents.dataroot import DataRootError, resolve_data_root
    from agents.live import LiveDaq, LiveHost
    from agents.registry import create_adapter, create_agent
    from agents.transport.stomp import StompTransport
    from eventstore.store import EventStore

    settings = load(config_path, store={"url": db_url}, broker={"url": broker_url},
                    agent={"name": instance, "user": user, "namespace": namespace,
                           "data_dir": data_dir,
                           "heartbeat_interval": heartbeat_interval,
                           "payload_threads": payload_threads, "sent_log": sent_log})
    config = _broker(settings)
    options = settings.agent
    agent_type = AGENT_NAMES[agent]
    name = options.name or f"{agent_type}-agent-{options.user}"
    namespace = options.namespace or str(load_workflow("fast_processing").get("testbed.namespace"))
    adapter_settings = settings.adapter_settings()
    actor: Agent
    if agent_type == "daq_simulator":
        actor = LiveDaq(name, namespace)
    else:
        actor = create_agent(agent_type, name, namespace)
    _quiet_stomp()
    stop = _stop_on_signals()
    with EventStore(settings.store.url, sender_zone=settings.store.sender_zone) as store:
        data_path = options.data_dir  # only the agents whose adapters keep files need one
        if agent_type in FILE_AGENTS:
            try:
                data_path = resolve_data_root(options.data_dir, store)
            except DataRootError as problem:
                raise SettingsProblem(str(problem)) from None
        transport = StompTransport(config, client_id=f"swf.{name}", name=name)
        host = LiveHost(actor, transport, store,
                        lambda adapter, params: create_adapter(adapter, data_path or Path(),
                                                               params, adapter_settings),
                        heartbeat_interval=options.heartbeat_interval,
                        adapter_threads={"payload": options.payload_threads},
                        sent_log=options.sent_log)
        host.start()
        logging.getLogger("swf.live").info("%s (%s) on %s, namespace %s", name, agent_type,
                                           config.address, namespace)
        while not stop.wait(0.5):
            if host.stopped.is_set():  # the host died: say so with a non-zero exit
                break
        host.stop()
    if not stop.is_set():
        raise click.ClickException(f"agent {name} stopped unexpectedly")


def run_live(config: WorkflowConfig, *, settings: Settings, seed: int, start_time: str | None,
             timeout: float, start_timeout: float = START_TIMEOUT,
             progress: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """``swf run --broker``: start one execution on the live agents and wait until the store
    (which the recorder fills) says it completed or failed, or ``timeout`` seconds passed.
    Returns the execution summary (as `swf query execution ID`).

    Before: a warning for each agent of the workflow that is not alive (no heartbeat within the
    stale window, or its last one said EXITED). After sending: unless the DAQ agent the run is
    addressed to shows it took the run (any message of it in the execution besides the request)
    within ``start_timeout`` seconds, a ClickException naming what is missing."""
    from agents.live import daq_name, request_run
    from agents.runtime import Progress
    from agents.transport.stomp import StompTransport
    from eventstore.envelope import utc_now
    from eventstore.store import EventStore
    from projections.projector import Projector
    from projections.queries import execution_summary

    broker = _broker(settings)
    _quiet_stomp()
    namespace = str(config.get("testbed.namespace"))
    user = settings.agent.user
    daq = daq_name(user)
    with EventStore(settings.store.url, sender_zone=settings.store.sender_zone) as store:
        projector = Projector(store)
        projector.catch_up()
        for warning in not_alive(store, config, namespace, daq):
            click.echo(f"warning: {warning}", err=True)
        transport = StompTransport(broker, name="swf-run")
        transport.start()
        try:
            allocation = request_run(transport, store, config, seed=seed, user=user,
                                     start_time=start_time)
        finally:
            transport.close()
        execution = allocation.execution_id
        if hasattr(progress, "start"):  # the progress line counts from the run's start
            progress.start = allocation.start_time  # type: ignore[union-attr]
        began = time.monotonic()
        deadline = began + timeout
        taken = False
        summary: dict[str, Any] | None = None
        while True:
            if not taken:
                taken = _taken(store, execution, daq, began, start_timeout, broker.address)
            projector.catch_up()
            summary = execution_summary(store, execution, namespace=namespace)
            if summary is not None and progress is not None:
                progress(Progress(utc_now(), store.head(), summary["stf_count"],
                                  summary["slices_completed"] + summary["slices_failed"],
                                  summary["slices_created"]))
            if summary is not None and summary["status"] != "running":
                return summary
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL)
    if summary is None:
        summary = {"execution_id": execution, "run_id": allocation.run_id,
                   "status": "unknown", "start_time": allocation.start_time}
    summary["error"] = (f"not finished after {timeout:g} s: are the agents and `swf record` "
                        f"running on {broker.address}?")
    return summary


def not_alive(store: Any, config: WorkflowConfig, namespace: str, daq: str) -> list[str]:
    """One line per agent the workflow needs that no live agent of the namespace stands for
    (the DAQ: by the name the run is addressed to)."""
    from agents.registry import workflow_agents
    from projections.queries import agents, alive

    rows = agents(store, namespace=namespace)
    problems = []
    for agent_type in workflow_agents(config.enabled):
        mine = [row for row in rows if row["agent_type"] == agent_type
                and (agent_type != "daq_simulator" or row["name"] == daq)]
        if any(alive(row) for row in mine):
            continue
        command = f"swf agent {AGENT_COMMANDS[agent_type]}"
        last = max((row["last_heartbeat"] for row in mine if row["last_heartbeat"]),
                   default=None)
        who = daq if agent_type == "daq_simulator" else f"{agent_type} agent"
        problems.append(f"no live {who} in namespace {namespace} "
                        f"({f'last heard of at {last}' if last else 'never heard of'}): "
                        f"start `{command}`")
    return problems


def _taken(store: Any, execution: str, daq: str, began: float, wait: float, address: str
           ) -> bool:
    """Whether the DAQ took the run (a message of it in the execution besides the request);
    ``wait`` seconds after ``began`` without that, a ClickException saying what is missing."""
    requested = False
    for event in store.read(execution_id=execution):
        if event.sender == daq and event.msg_type != "run_imminent":
            return True
        requested = requested or event.msg_type == "run_imminent"
    if time.monotonic() < began + wait:
        return False
    waited = f"{wait:g} s"
    if not requested:
        raise click.ClickException(
            f"the request for {execution} was not recorded within {waited}: is `swf record` "
            f"running on {address} with this store?")
    raise click.ClickException(
        f"no daq agent took {execution} within {waited}: {daq} is not running on {address} "
        f"(start `swf agent daq` with [agent] user = {daq.rpartition('-agent-')[2]}); the "
        f"request stays recorded")


# -- helpers -------------------------------------------------------------------------------------


def _broker(settings: Settings) -> BrokerConfig:
    try:
        return settings.broker_config()
    except BrokerConfigError as problem:
        raise SettingsProblem(str(problem)) from None


def _quiet_stomp() -> None:
    """stomp.py logs every failed send with a traceback; our transport says it in one line."""
    stomp_log = logging.getLogger("stomp.py")
    if stomp_log.getEffectiveLevel() > logging.DEBUG:
        stomp_log.setLevel(logging.CRITICAL)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(_signum: int, _frame: Any) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)
    if sys.platform != "win32":
        signal.signal(signal.SIGHUP, handler)
    return stop
