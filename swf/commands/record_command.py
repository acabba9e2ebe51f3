"""``swf record``: the broker recorder as a process.

At start it subscribes (durably) to every recorded destination (agents/transport/destinations.py)
and proves that each work queue it records is copied to the topic it subscribes to: a probe
through each queue (agents/recorder_probe.py). A queue whose copy does not arrive ends it with a
non-zero status within ``START_TIMEOUT`` seconds, naming the queue and the broker configuration
to add, unless ``--topics-only`` says to record the topics alone. Then it says so on stderr
(``ready: ...``), writes ``--ready-file`` if asked, sends a heartbeat every 30 seconds (``swf
status`` lists it with its lag), and records until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
import orjson

from swf.commands.group import db_flag, load, main
from swf.commands.live_commands import _broker, _quiet_stomp, _stop_on_signals, broker_options

if TYPE_CHECKING:
    from agents.recorder import BrokerRecorder
    from agents.transport.broker import BrokerConfig

START_TIMEOUT = 25.0  # seconds to subscribe and prove the copies (the process exits within 30 s)
PROBE_TIMEOUT = 10.0  # of which at most this long for the copies to arrive
EXITED_WAIT = 5.0  # seconds a clean stop waits for its EXITED heartbeat to be stored

log = logging.getLogger("swf.recorder")


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
@click.option("--destination", "extra", multiple=True, metavar="DEST",
              help="Record DEST too (repeatable): /topic/NAME, or /queue/NAME through the "
                   "broker's copy on /topic/monitor.NAME (proven at start like the others).")
@click.option("--topics-only", is_flag=True,
              help="Record the topics only, not the work queues (for a broker that does not "
                   "copy them): starts with a warning naming the queues left out.")
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write this file once subscribed and the queue copies proven (removed "
                   "first, and again at exit): start the agents once it exists.")
def record_command(broker_url: str | None, config_path: Path | None, db_url: str | None,
                   name: str | None, batch_size: int | None, batch_wait: float | None,
                   extra: tuple[str, ...], topics_only: bool, ready_file: Path | None) -> None:
    """Record every message of the pipeline into the store: durable subscriptions on the topics
    and on the broker's copies of the work queues, appended in small batches, each message acked
    only after its batch committed. Proves at start that each work queue is copied (exit 1 if
    not). Runs until SIGTERM or Ctrl-C."""
    from agents.recorder import BrokerRecorder
    from agents.recorder_probe import Heartbeats, heartbeat_topic
    from agents.transport.destinations import DestinationError, recording
    from eventstore.store import EventStore

    settings = load(config_path, store={"url": db_url}, broker={"url": broker_url},
                    recorder={"name": name, "batch_size": batch_size, "batch_wait": batch_wait})
    config = _broker(settings)
    options = settings.recorder
    try:
        plan = recording(extra, topics_only=topics_only)
        left_out = recording(extra).queues if topics_only else ()
    except DestinationError as problem:
        raise click.BadParameter(str(problem), param_hint="--destination") from None
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)  # a file left by an earlier run must not count
    if left_out:
        click.echo(f"warning: --topics-only: messages sent to {', '.join(left_out)} are not "
                   f"recorded", err=True)
    _quiet_stomp()
    stop = _stop_on_signals()
    fatal: list[str] = []

    def give_up(reason: str) -> None:
        fatal.append(reason)
        stop.set()

    subscriptions = (*plan.subscriptions, heartbeat_topic(options.name))
    heartbeats: Heartbeats | None = None
    with EventStore(settings.store.url, sender_zone=settings.store.sender_zone) as store:
        recorder = BrokerRecorder(store, config, name=options.name,
                                  destinations=subscriptions, batch_size=options.batch_size,
                                  batch_wait=options.batch_wait, prefetch=options.prefetch,
                                  on_fatal=give_up)
        recorder.start()
        try:
            failure = _start(recorder, config, len(subscriptions), plan.queues, options.name,
                             stop)
            if failure is not None:
                fatal.append(failure)
            elif not stop.is_set():
                heartbeats = Heartbeats(config, options.name)
                heartbeats.start()
                if ready_file is not None:
                    _write_ready(ready_file, options.name, config.address, plan.topics,
                                 plan.queues)
                click.echo(f"ready{f': wrote {ready_file}' if ready_file else ''}", err=True)
                stop.wait()
        finally:
            if heartbeats is not None:
                exited = heartbeats.stop()
                if exited is not None and not fatal:  # `swf status` then says exited, not stale
                    deadline = time.monotonic() + EXITED_WAIT
                    while not store.stored_ids({exited}) and time.monotonic() < deadline:
                        time.sleep(0.05)
            recorder.stop()
            if ready_file is not None:
                ready_file.unlink(missing_ok=True)
    stats = recorder.stats
    click.echo(stats.summary(), err=True)
    if fatal:  # a supervisor restarts a process that exits non-zero
        raise click.ClickException(fatal[0])


def _start(recorder: BrokerRecorder, config: BrokerConfig, subscriptions: int,
           queues: tuple[str, ...], name: str, stop: threading.Event) -> str | None:
    """Wait for the recorder's subscriptions, then prove the queue copies. None when all is
    well (or a signal came meanwhile), else what is wrong."""
    from agents.recorder_probe import unproven_queues
    from agents.transport.destinations import copy_configuration

    deadline = time.monotonic() + START_TIMEOUT
    while not recorder.wait_ready(0.2):
        if stop.is_set():
            return None
        if time.monotonic() >= deadline:
            return (f"not subscribed on {config.address} within {START_TIMEOUT:g} s: is the "
                    f"broker running there, and are the credentials right?")
    click.echo(f"recording {config.address} as {name}: {subscriptions} durable subscriptions "
               f"established", err=True)
    if not queues:
        return None
    wait = min(PROBE_TIMEOUT, deadline - time.monotonic())
    missing = unproven_queues(config, queues, name=name, timeout=wait)
    if missing is None:
        return f"could not send the queue probes on {config.address} within {wait:.0f} s"
    if missing:
        it, topic = ("it", "topic") if len(missing) == 1 else ("them", "topics")
        return (f"the broker at {config.address} does not copy {', '.join(missing)} to the "
                f"{topic} swf records {it} from: a probe sent to each did not arrive there "
                f"within {wait:.0f} s, so nothing sent to {it} would be recorded. Add to the "
                f"broker's configuration (then restart it):\n"
                f"{copy_configuration(missing)}\n"
                f"or start `swf record --topics-only` to record the topics alone.")
    click.echo(f"the broker copies {', '.join(queues)}: each probe arrived", err=True)
    return None


def _write_ready(path: Path, name: str, address: str, topics: tuple[str, ...],
                 queues: tuple[str, ...]) -> None:
    """Write the ready file atomically (a reader never sees it half written)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(orjson.dumps({"name": name, "pid": os.getpid(), "broker": address,
                                      "topics": topics, "queues": queues}) + b"\n")
    partial.replace(path)
