"""What ``swf record`` sends through the broker to check its own path: a probe through each work
queue at start (is the queue copied to the topic the recorder subscribes to?), and its
heartbeats while it runs (how long the way to the store takes: ``swf status`` shows it).

**The probe** is a ``recorder_probe`` message sent to the work queue itself, so it lands where a
real consumer takes work (our worker and fast processing agents; upstream's workflow runner on
``/queue/workflow_control``). It is built to be ignored harmlessly there:

- its ``namespace`` is ``swf-recorder``, which no workflow uses: our agents ignore (and ack at
  once) any message of another namespace (agents/base.py ``Agent.accepts``), and so does
  upstream's ``BaseAgent.log_received_message``, at debug level, before looking at its type
  (swf-common-lib:src/swf_common_lib/base_agent.py:478-483; the workflow runner returns on that
  at swf-testbed:workflows/workflow_runner.py:734-736; a runner without a namespace would log
  the unknown type at info, base_agent.py:485-486, and ignore it, workflow_runner.py:744-745;
  its null ``run_id`` and ``execution_id`` change no run context either, as in
  swf-testbed:example_agents/fast_processing_agent.py:330-340, whose consumer queue is named
  like our results queue);
- it is not persistent (a broker restart drops it) and ``expires`` after ``PROBE_EXPIRES``
  seconds: a probe no consumer took by then is never delivered (the broker drops it at its
  expiry scan, or when it would deliver it: deploy/activemq/activemq.xml scans no queues);
- the catalog knows it (run-less): its copy is recorded as a valid event under the queue's name.

The copies are awaited on a connection of the probe's own with plain subscriptions on the copy
topics, not through the recorder's durable ones: those may hold a backlog from while the
recorder was down, which would delay the answer without saying anything about the copies.

**Heartbeats** are ``agent_heartbeat`` messages (``agent_type`` ``recorder``) sent every
``HEARTBEAT_INTERVAL`` seconds to a topic of the recorder's own, which it records like any
other: the time from a heartbeat's stamp to its being stored is the recorder's lag, and its
absence says the recorder is gone. They carry the wall clock, pid and host, like every agent's;
the recorder makes no decision, so nothing replays them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from agents.transport import Delivery
from agents.transport.broker import BrokerConfig
from agents.transport.destinations import copy_topic
from agents.transport.stomp import StompTransport
from eventstore.envelope import utc_now

log = logging.getLogger("swf.recorder")

NAMESPACE = "swf-recorder"  # no workflow's: every agent ignores its messages
PROBE_EXPIRES = 300.0  # seconds (generous: the broker's clock may differ from this host's)
HEARTBEAT_INTERVAL = 30.0  # seconds; `swf status` calls a recorder stale after 3 minutes
HEARTBEAT_PREFIX = "/topic/swf.recorder."


def heartbeat_topic(name: str) -> str:
    """The topic a recorder sends its heartbeats to (and records them from)."""
    return HEARTBEAT_PREFIX + "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def probe_message(name: str, queue: str) -> dict[str, Any]:
    return {"msg_type": "recorder_probe", "msg_id": f"{name}-probe-{uuid.uuid4()}",
            "namespace": NAMESPACE, "execution_id": None, "run_id": None, "sender": name,
            "timestamp": utc_now(), "queue": queue}


def heartbeat_message(name: str, operational_state: str) -> dict[str, Any]:
    return {"msg_type": "agent_heartbeat", "msg_id": f"{name}-heartbeat-{uuid.uuid4()}",
            "namespace": NAMESPACE, "execution_id": None, "run_id": None, "sender": name,
            "timestamp": utc_now(), "agent_type": "recorder", "status": "OK",
            "operational_state": operational_state, "pid": os.getpid(),
            "hostname": socket.gethostname()}


def unproven_queues(config: BrokerConfig, queues: Sequence[str], *, name: str,
                    timeout: float) -> list[str] | None:
    """Send a probe through each queue and wait until its copy arrives on the queue's copy
    topic. Returns the queues whose copies did not arrive within ``timeout`` seconds (all told),
    or None when the broker could not be reached to ask."""
    if not queues:
        return []
    deadline = time.monotonic() + timeout
    probes = {queue: probe_message(name, queue) for queue in queues}
    waiting = {probe["msg_id"]: queue for queue, probe in probes.items()}
    arrived = threading.Condition()

    def received(delivery: Delivery) -> None:  # the copy topics carry other traffic too
        transport.ack(delivery)
        try:
            message = orjson.loads(delivery.body)
        except orjson.JSONDecodeError:
            return
        msg_id = message.get("msg_id") if type(message) is dict else None
        if type(msg_id) is str and msg_id in waiting \
                and copy_topic(waiting[msg_id]) == delivery.destination:
            with arrived:
                waiting.pop(msg_id)
                arrived.notify_all()

    transport = StompTransport(config, name=f"{name}-probe")
    for queue in queues:
        transport.subscribe(copy_topic(queue))
    transport.start(received)
    try:
        if not transport.wait_ready(max(0.0, deadline - time.monotonic())):
            return None
        expires = str(int((time.time() + PROBE_EXPIRES) * 1000))
        headers = {"persistent": "false", "expires": expires,
                   "content-type": "application/json"}
        transport.send([(queue, orjson.dumps(probe), headers)
                        for queue, probe in probes.items()],
                       timeout=max(0.1, deadline - time.monotonic()))
        with arrived:
            arrived.wait_for(lambda: not waiting, max(0.0, deadline - time.monotonic()))
            return [queue for queue in queues if queue in waiting.values()]
    except TimeoutError:
        return None
    finally:
        transport.close()


class Heartbeats:
    """A recorder's heartbeats: READY at start and every ``interval`` seconds, EXITED at a clean
    stop, on a connection of their own."""

    def __init__(self, config: BrokerConfig, name: str, *,
                 interval: float = HEARTBEAT_INTERVAL) -> None:
        self.name, self.interval = name, interval
        self.topic = heartbeat_topic(name)
        self.transport = StompTransport(config, name=f"{name}-heartbeat")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"{name}-heartbeat",
                                        daemon=True)

    def start(self) -> None:
        self.transport.start()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> str | None:
        """Send EXITED (unless the broker is gone); returns its msg_id, None if not sent."""
        self._stop.set()
        self._thread.join(timeout)
        try:
            return self._send("EXITED", timeout)
        finally:
            self.transport.close()

    def _beat(self) -> None:
        while True:
            self._send("READY", self.interval)
            if self._stop.wait(self.interval):
                return

    def _send(self, state: str, timeout: float) -> str | None:
        message = heartbeat_message(self.name, state)
        try:
            self.transport.send([(self.topic, orjson.dumps(message),
                                  {"content-type": "application/json"})], timeout=timeout)
        except Exception as problem:  # noqa: BLE001 - a missed heartbeat is what it reports
            log.warning("recorder heartbeat not sent (%s)", str(problem) or type(problem).__name__)
            return None
        return str(message["msg_id"])
