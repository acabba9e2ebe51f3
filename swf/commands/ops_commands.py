"""Operations: ``swf status`` (is everything alive and keeping up?) and ``swf stop EXECUTION``
(end a run early).

``swf stop`` sends upstream's ``stop_workflow`` (``namespace``, ``execution_id``, ``timestamp``,
``source``) naming the execution. The DAQ agent that runs it ends the run at the stop's time:
``end_run`` then (with a ``reason``), nothing of its schedule after it; the other agents finish
what was produced until then, and the execution is derived ``terminated``. The stop's time is a
moment just ahead (``STOP_AHEAD`` seconds), so the DAQ hears of it before it is due:

- a live execution (its agents run as ``swf agent``): the stop goes to the broker, which the
  recorder stores like any message; its time is the wall clock;
- an embedded execution (``swf run``): the stop is appended to the store, where a ``swf run
  --realtime`` running it looks for stops before each step (a simulated run is over in well
  under a second, so a stop can only find one that is paced by the clock); its time is on the
  execution's own simulated clock, estimated from its events (simulated against stored times
  gives the pace). A stop that no running process picks up stays recorded and changes
  nothing: the execution stays as it was.
"""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import orjson

from swf.commands.group import SettingsProblem, config_option, db_flag, load, main
from swf.output import echo_json, echo_rows

STOP_AHEAD = 2.0  # seconds between sending a stop and its time
STOP_SENDER = "swf-stop"
RECORDING_SAMPLE = 200  # latest events whose recording lag `swf status` reports
AGENT_COLUMNS = ("namespace", "name", "agent_type", "state", "operational_state",
                 "last_heartbeat", "age_s", "pid", "hostname")
RECORDER_COLUMNS = ("name", "state", "operational_state", "last_heartbeat", "age_s", "lag_s",
                    "pid", "hostname")
EXECUTION_COLUMNS = ("execution_id", "namespace", "workflow", "start_time", "runs", "stf_count",
                     "slices_created", "slices_completed", "age_s")


# -- swf status ----------------------------------------------------------------------------------


@main.command("status")
@db_flag
@config_option
@click.option("--namespace", help="Only agents and executions of this namespace.")
@click.option("--now", help="Judge ages at this ISO-8601 time (default: the wall clock).")
@click.option("--no-catch-up", "stale", is_flag=True,
              help="Report the tables as they are, without applying new events first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status_command(db_url: str | None, config_path: Path | None, namespace: str | None,
                   now: str | None, stale: bool, as_json: bool) -> None:
    """Agents (alive, stale or exited), recorders and how far behind the log they record,
    projections and how far behind the log they are, and the executions still open."""
    from eventstore.store import EventStore

    settings = load(config_path, store={"url": db_url})
    with EventStore(settings.store.url) as store:
        report = status_report(store, namespace=namespace, now=now, catch_up=not stale)
    if as_json:
        echo_json(report)
        return
    click.echo("agents")
    echo_rows(report["agents"], AGENT_COLUMNS, False)
    from agents.recorder_probe import HEARTBEAT_INTERVAL

    click.echo(f"\nrecorders (`swf record`, heartbeat every {HEARTBEAT_INTERVAL:g} s; lag: how "
               f"long the last one took from the recorder through the broker into the store)")
    echo_rows(report["recorders"], RECORDER_COLUMNS, False)
    recording = report["recording"]
    click.echo(f"\nlog: head {recording['head']}, last stored {recording['last_recorded_at']} "
               f"({_seconds(recording['idle_s'])} ago); recording lag of the latest "
               f"{recording['sampled']} broker messages: median "
               f"{_seconds(recording['lag_median_s'])}, max {_seconds(recording['lag_max_s'])}")
    click.echo("\nprojections (lag: events not yet applied"
               + (", before this catch-up)" if not stale else ")"))
    echo_rows(report["projections"], ("name", "position", "head", "lag"), False)
    click.echo("\nopen executions")
    echo_rows(report["open_executions"], EXECUTION_COLUMNS, False)


def status_report(store: Any, *, namespace: str | None = None, now: str | None = None,
                  catch_up: bool = True) -> dict[str, Any]:
    """What ``swf status`` shows, as one JSON-able object."""
    from eventstore.envelope import format_time, parse_time
    from projections import queries
    from projections.projector import Projector

    moment = parse_time(now) if now else datetime.now(UTC)
    projector = Projector(store)
    projections = projector.status()
    if catch_up:
        projector.catch_up()
    rows = queries.agents(store, now=format_time(moment))  # recorders: of every namespace
    agents, recorders = [], []
    for row in rows:
        if row["agent_type"] != "recorder" and namespace not in (None, row["namespace"]):
            continue
        entry = {name: row.get(name) for name in AGENT_COLUMNS}
        entry["state"] = ("alive" if queries.alive(row) else
                          "exited" if row["operational_state"] == "EXITED" else "stale")
        entry["age_s"] = _age(row["last_heartbeat"], moment)
        if row["agent_type"] == "recorder":
            latest = store.latest_from(row["name"], "agent_heartbeat")
            entry["lag_s"] = None if latest is None or latest[1] is None else round(
                (parse_time(latest[0]) - parse_time(latest[1])).total_seconds(), 3)
            recorders.append(entry)
        else:
            agents.append(entry)
    running = queries.executions(store, namespace=namespace, status="running")
    open_executions = [{**{name: row.get(name) for name in EXECUTION_COLUMNS},
                        "age_s": _age(row.get("start_time"), moment)} for row in running]
    return {"agents": agents, "recorders": recorders,
            "recording": _recording(store, moment), "projections": projections,
            "open_executions": open_executions, "now": format_time(moment)}


def _recording(store: Any, moment: datetime) -> dict[str, Any]:
    """How far behind the broker the log is: for the latest messages that came through the
    broker, the time from the broker's ``timestamp`` header to being stored."""
    from eventstore.envelope import parse_time

    head = store.head()
    lags: list[float] = []
    last = None
    for event in store.read_raw(after=max(0, head - RECORDING_SAMPLE)):
        last = event.recorded_at
        stamp = event.headers.get("timestamp") if event.headers else None
        if stamp and str(stamp).isdigit():
            sent = datetime.fromtimestamp(int(stamp) / 1000, UTC)
            lags.append((parse_time(event.recorded_at) - sent).total_seconds())
    return {"head": head, "last_recorded_at": last,
            "idle_s": _age(last, moment), "sampled": len(lags),
            "lag_median_s": round(statistics.median(lags), 3) if lags else None,
            "lag_max_s": round(max(lags), 3) if lags else None}


def _age(when: str | None, moment: datetime) -> float | None:
    from eventstore.envelope import parse_time

    return None if not when else round((moment - parse_time(when)).total_seconds(), 3)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


# -- swf stop ------------------------------------------------------------------------------------


@main.command("stop")
@click.argument("execution_id")
@db_flag
@config_option
@click.option("--broker", "broker_url", metavar="URL",
              help="For a live execution: the broker its agents are on (default: $SWF_BROKER, "
                   "else [broker] url).")
@click.option("--namespace", help="The execution's namespace (when its id is in several).")
@click.option("--wait", is_flag=True, help="Wait until the execution is no longer running, "
                                           "then print its status.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0,
              show_default=True, help="With --wait: seconds to wait.")
def stop_command(execution_id: str, db_url: str | None, config_path: Path | None,
                 broker_url: str | None, namespace: str | None, wait: bool,
                 timeout: float) -> None:
    """End a running execution early: its DAQ ends the run now (end_run), the other agents
    finish what was produced, and the execution is derived `terminated`. Live executions are
    stopped through the broker, embedded ones (`swf run --realtime`) through the store."""
    from agents.heartbeat import EMBEDDED_HOST
    from eventstore.envelope import TOPIC, Incoming, format_time, parse_time
    from eventstore.store import EventStore, Limit
    from projections import queries
    from projections.projector import Projector

    settings = load(config_path, store={"url": db_url}, broker={"url": broker_url})
    with EventStore(settings.store.url) as store:
        Projector(store).catch_up()
        summary = _summary(store, execution_id, namespace)
        if summary["status"] != "running":
            raise click.ClickException(f"execution {execution_id} is {summary['status']}: "
                                       f"nothing to stop")
        ns = summary["namespace"]
        beat = next(store.read(execution_id=execution_id, msg_types=["agent_heartbeat"],
                               limit=1), None)
        embedded = beat is not None and (beat.data or {}).get("hostname") == EMBEDDED_HOST
        if embedded:
            now, pace = _simulated_now(store, execution_id)
            when = now + timedelta(seconds=STOP_AHEAD * max(pace, 1.0))
        else:
            last = store.last_event(execution_id, Limit())
            latest = parse_time(last[1]) if last else datetime.now(UTC)
            when = max(latest, datetime.now(UTC)) + timedelta(seconds=STOP_AHEAD)
        message = {"msg_type": "stop_workflow", "msg_id": str(uuid.uuid4()), "namespace": ns,
                   "execution_id": execution_id, "run_id": None, "sender": STOP_SENDER,
                   "timestamp": format_time(when), "source": "swf stop"}
        if embedded:
            store.append([Incoming(TOPIC, orjson.dumps(message))])
            how = "appended to the store (a `swf run --realtime` running it stops)"
        else:
            _publish(settings, message)
            how = "sent to the broker"
        click.echo(f"stop {message['msg_id']} for {execution_id} at {message['timestamp']}: "
                   f"{how}", err=True)
        if not wait:
            return
        deadline = time.monotonic() + timeout
        while True:
            Projector(store).catch_up()
            summary = queries.execution_summary(store, execution_id, namespace=ns) or summary
            if summary["status"] != "running" or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
    click.echo(f"{execution_id} {summary['status']}")
    if summary["status"] == "running":
        raise click.ClickException(f"{execution_id} still running after {timeout:g} s: is its "
                                   f"daq agent running?")


def _simulated_now(store: Any, execution_id: str) -> tuple[datetime, float]:
    """(the simulated clock of an embedded run now, its pace in simulated seconds per wall
    second), from its first and latest events: their simulated times against the store's
    clock when they were stored."""
    from eventstore.envelope import parse_time
    from eventstore.store import Limit

    first = next(store.read(execution_id=execution_id, limit=1))
    position = store.last_event(execution_id, Limit())[0]
    (last,) = store.read(after=position - 1, until=position)
    simulated = (parse_time(last.time) - parse_time(first.time)).total_seconds()
    stored = (parse_time(last.recorded_at) - parse_time(first.recorded_at)).total_seconds()
    pace = simulated / stored if simulated > 0 and stored > 0 else 1.0
    waited = max(0.0, (datetime.now(UTC) - parse_time(last.recorded_at)).total_seconds())
    return parse_time(last.time) + timedelta(seconds=waited * pace), pace


def _summary(store: Any, execution_id: str, namespace: str | None) -> dict[str, Any]:
    from projections import queries

    try:
        summary = queries.execution_summary(store, execution_id, namespace=namespace)
    except queries.AmbiguousExecution as problem:
        raise click.ClickException(str(problem)) from None
    if summary is None:
        raise click.ClickException(f"no execution {execution_id!r}"
                                   + (f" in namespace {namespace!r}" if namespace else ""))
    return summary


def _publish(settings: Any, message: dict[str, Any]) -> None:
    from agents.transport.broker import BrokerConfigError
    from agents.transport.stomp import StompTransport
    from eventstore.envelope import TOPIC

    try:
        config = settings.broker_config()
    except BrokerConfigError as problem:
        raise SettingsProblem(f"{message['execution_id']} runs on live agents: {problem}") \
            from None
    transport = StompTransport(config, name=STOP_SENDER)
    transport.start()
    try:
        transport.send([(TOPIC, orjson.dumps(message), {"content-type": "application/json"})],
                       timeout=30.0)
    finally:
        transport.close()
