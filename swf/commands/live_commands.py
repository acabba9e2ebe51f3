"""Live mode on a broker: ``swf record``, ``swf agent NAME``, and ``swf run --broker``'s path.

Each runs until SIGTERM or SIGINT (Ctrl-C) and then stops cleanly. Their settings come from
swf/settings.py (flags > environment > config file > defaults); one config file can serve all
of them (``--config PATH.toml`` or $SWF_CONFIG)::

    [broker]                   # credentials better in the environment (SWF_STOMP_PASSWORD)
    url = "stomp://127.0.0.1:61613"
    [store]
    url = "sqlite:///swf.db"
    [agent]                    # defaults for `swf agent`
    namespace = "torre2"
    heartbeat_interval = 60
    data_dir = "swf-data"
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
POLL = 0.25  # seconds between looks at the store while `swf run --broker` waits


def broker_options(function: Callable[..., Any]) -> Callable[..., Any]:
    function = config_option(function)
    return click.option(
        "--broker", "broker_url", metavar="URL",
        help="STOMP broker, stomp://HOST:PORT or stomp+ssl://HOST:PORT (default: $SWF_BROKER, "
             "else ACTIVEMQ_HOST/ACTIVEMQ_PORT/ACTIVEMQ_USE_SSL, else [broker] url); "
             "credentials from SWF_STOMP_USER/SWF_STOMP_PASSWORD (or ACTIVEMQ_USER/"
             "ACTIVEMQ_PASSWORD) or the config file.")(function)


@main.command("record")
@broker_options
@db_flag
@click.option("--name", help="Client id and durable subscription prefix "
                             "(default: [recorder] name, else swf-recorder).")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Most messages appended in one transaction (default: [recorder] "
                   "batch_size, else 500).")
@click.option("--batch-wait", type=click.FloatRange(min=0),
              help="Seconds a batch waits for more messages after its first (default: "
                   "[recorder] batch_wait, else 0.02).")
def record_command(broker_url: str | None, config_path: Path | None, db_url: str | None,
                   name: str | None, batch_size: int | None, batch_wait: float | None) -> None:
    """Record every message of the pipeline into the store: durable subscriptions on the topic
    and the monitor copies of the work queues, appended in small batches, each message acked
    only after its batch committed. Runs until SIGTERM or Ctrl-C."""
    from agents.recorder import BrokerRecorder
    from eventstore.store import EventStore

    settings = load(config_path, store={"url": db_url}, broker={"url": broker_url},
                    recorder={"name": name, "batch_size": batch_size, "batch_wait": batch_wait})
    config = _broker(settings)
    options = settings.recorder
    _quiet_stomp()
    stop = _stop_on_signals()
    with EventStore(settings.store.url) as store:
        recorder = BrokerRecorder(store, config, name=options.name, batch_size=options.batch_size,
                                  batch_wait=options.batch_wait, prefetch=options.prefetch)
        recorder.start()
        logging.getLogger("swf.recorder").info("recording %s as %s", config.address,
                                               options.name)
        stop.wait()
        recorder.stop()
    stats = recorder.stats
    click.echo(f"recorded {stats.stored} events ({stats.duplicates} duplicates absorbed, "
               f"{stats.rejected} rejected)", err=True)


@main.command("agent")
@click.argument("agent", metavar="NAME", type=click.Choice(sorted(AGENT_NAMES)))
@broker_options
@db_flag
@click.option("--name", "instance", help="Instance name, the sender of its messages "
                                         "(default: [agent] name, else TYPE-agent-$USER, as in "
                                         "`swf run`).")
@click.option("--namespace", help="Namespace to work in (default: [agent] namespace, else the "
                                  "default workflow's).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="STF files, local DDM and batch state (default: $SWF_DATA, else [agent] "
                   "data_dir, else ./swf-data).")
@click.option("--heartbeat-interval", type=click.FloatRange(min=0, min_open=True),
              help="Seconds between heartbeats (default: [agent] heartbeat_interval, else 60).")
@click.option("--payload-threads", type=click.IntRange(min=1),
              help="Slice payloads run at the same time (worker; default: [agent] "
                   "payload_threads, else 32).")
@click.option("--sent-log", type=click.Path(dir_okay=False, path_type=Path),
              help="Append 'msg_id destination' for every message the broker confirmed "
                   "(an audit trail to hold against the store; default: [agent] sent_log).")
def agent_command(agent: str, broker_url: str | None, config_path: Path | None,
                  db_url: str | None, instance: str | None, namespace: str | None,
                  data_dir: Path | None, heartbeat_interval: float | None,
                  payload_threads: int | None, sent_log: Path | None) -> None:
    """Run one agent (daq, data, fastmon, fast_processing, processing, worker) as this process,
    on the broker, until SIGTERM or Ctrl-C. It resumes from the store: the executions still
    open are replayed through it first. The daq agent starts a run when `swf run --broker`
    asks."""
    from agents.base import Agent
    from agents.live import LiveDaq, LiveHost
    from agents.registry import create_adapter, create_agent
    from agents.runtime import default_user
    from agents.transport.stomp import StompTransport
    from eventstore.store import EventStore

    settings = load(config_path, store={"url": db_url}, broker={"url": broker_url},
                    agent={"name": instance, "namespace": namespace, "data_dir": data_dir,
                           "heartbeat_interval": heartbeat_interval,
                           "payload_threads": payload_threads, "sent_log": sent_log})
    config = _broker(settings)
    options = settings.agent
    agent_type = AGENT_NAMES[agent]
    name = options.name or f"{agent_type}-agent-{default_user()}"
    namespace = options.namespace or str(load_workflow("fast_processing").get("testbed.namespace"))
    data_path = options.data_dir.absolute()
    adapter_settings = settings.adapter_settings()
    actor: Agent
    if agent_type == "daq_simulator":
        actor = LiveDaq(name, namespace, data_dir=str(data_path))
    else:
        actor = create_agent(agent_type, name, namespace)
    _quiet_stomp()
    stop = _stop_on_signals()
    with EventStore(settings.store.url) as store:
        transport = StompTransport(config, client_id=f"swf.{name}", name=name)
        host = LiveHost(actor, transport, store,
                        lambda adapter, params: create_adapter(adapter, data_path, params,
                                                               adapter_settings),
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
             timeout: float, progress: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """``swf run --broker``: start one execution on the live agents and wait until the store
    (which the recorder fills) says it completed or failed, or ``timeout`` seconds passed.
    Returns the execution summary (as `swf query execution ID`)."""
    from agents.live import request_run
    from agents.runtime import Progress
    from agents.transport.stomp import StompTransport
    from eventstore.envelope import utc_now
    from eventstore.store import EventStore
    from projections.projector import Projector
    from projections.queries import execution_summary

    broker = _broker(settings)
    _quiet_stomp()
    namespace = str(config.get("testbed.namespace"))
    with EventStore(settings.store.url) as store:
        transport = StompTransport(broker, name="swf-run")
        transport.start()
        try:
            allocation = request_run(transport, store, config, seed=seed, start_time=start_time)
        finally:
            transport.close()
        projector = Projector(store)
        if hasattr(progress, "start"):  # the progress line counts from the run's start
            progress.start = allocation.start_time  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        summary: dict[str, Any] | None = None
        while True:
            projector.catch_up()
            summary = execution_summary(store, allocation.execution_id,
                                        namespace=namespace)
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
        summary = {"execution_id": allocation.execution_id, "run_id": allocation.run_id,
                   "status": "unknown", "start_time": allocation.start_time}
    summary["error"] = (f"not finished after {timeout:g} s: are the agents and `swf record` "
                        f"running on {broker.address}?")
    return summary


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
