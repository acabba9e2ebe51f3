"""Which destinations ``swf record`` records, and how a work queue is recorded without taking
its work: the one place the default list lives.

A topic is recorded by a durable subscription of its own. A work queue is not consumed (that
would steal work from its consumer): the broker copies every message sent to ``/queue/NAME`` to
the topic ``/topic/monitor.NAME`` (ActiveMQ Classic: a composite queue with
``forwardOnly="false"``, deploy/activemq/activemq.xml; Artemis: a non-exclusive divert), the
recorder subscribes to that copy and stores it under the queue's name. ``swf record`` proves at
start that each copy arrives (agents/recorder_probe.py), since a broker without them would
otherwise record nothing of the queues, silently.

What is recorded by default (upstream's destinations as its code sends to them, see
``notes/upstream-wire-formats.md`` section 1):

- ``/topic/epictopic``: our agents, and upstream's workflow runner, data and FastMon agents
  (swf-testbed:workflows/stf_datataking.py:121, sent by
  swf-common-lib:src/swf_common_lib/base_agent.py:635-666);
- our work queues ``/queue/panda.transformer.slices`` (slices for the workers) and
  ``/queue/panda.results.fastprocessing`` (their results);
- upstream's PanDA topics: ``/topic/panda.workers`` (swf-testbed:
  example_agents/fast_processing_agent.py:38; swf-panda-workers:
  config/swf_panda_workers.yaml:48-83), ``/topic/panda.slices`` (fast_processing_agent.py:35),
  ``/topic/panda.results`` (swf-transform:conf/prompt.conf:14-23) and
  ``/topic/panda.transformer`` (swf-panda-workers:
  lib/swf_panda_workers/prompt/handlers/workerhandler.py:370-383);
- upstream's work queue ``/queue/panda.slices.transformer``: the transformer consumes slices
  from it and heart-beats on it (swf-transform brokers/activemq.py:366-379,411-442; on
  ActiveMQ Classic, as deployed here, only what is sent to the queue itself is copied: the
  slices published to ``/topic/panda.slices`` are recorded from the topic);
- upstream's work queue ``/queue/workflow_control`` (run_workflow, stop_workflow,
  status_request for its workflow runner: swf-testbed:workflows/workflow_runner.py:199,
  workflows/send_workflow_command.py:122-144).

Left out (add them with ``swf record --destination``): the operations queues
``/queue/epicprod.ops`` and ``/queue/canary.ops``, the per-user ``/queue/agent_control.USER``,
and the legacy DAQ simulator's bare ``epictopic``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from eventstore.envelope import RESULT_QUEUE, SLICE_QUEUE, TOPIC

TOPIC_PREFIX, QUEUE_PREFIX = "/topic/", "/queue/"
COPY_PREFIX = "/topic/monitor."  # /queue/NAME is copied to /topic/monitor.NAME

UPSTREAM_TOPICS = ("/topic/panda.workers", "/topic/panda.slices", "/topic/panda.results",
                   "/topic/panda.transformer")
WORKFLOW_CONTROL = "/queue/workflow_control"
TRANSFORMER_QUEUE = "/queue/panda.slices.transformer"
DEFAULT_DESTINATIONS = (TOPIC, SLICE_QUEUE, RESULT_QUEUE, *UPSTREAM_TOPICS, TRANSFORMER_QUEUE,
                        WORKFLOW_CONTROL)


class DestinationError(ValueError):
    """A destination ``swf record`` cannot record (one line)."""


def copy_topic(queue: str) -> str:
    """The topic the broker copies a work queue's messages to."""
    return COPY_PREFIX + queue.removeprefix(QUEUE_PREFIX)


def queue_of(destination: str) -> str | None:
    """The work queue a copy topic stands for; None for any other destination."""
    if destination.startswith(COPY_PREFIX) and len(destination) > len(COPY_PREFIX):
        return QUEUE_PREFIX + destination.removeprefix(COPY_PREFIX)
    return None


@dataclass(frozen=True, slots=True)
class Recording:
    """What one recorder records: the topics it subscribes to directly, and the work queues it
    records through their copies."""

    topics: tuple[str, ...]
    queues: tuple[str, ...]

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """Every destination the recorder subscribes to (durably)."""
        return (*self.topics, *(copy_topic(queue) for queue in self.queues))


def recording(extra: Iterable[str] = (), *, topics_only: bool = False) -> Recording:
    """The default destinations plus ``extra`` (each ``/topic/NAME`` or ``/queue/NAME``), in
    order, without repeats; with ``topics_only`` the work queues are left out."""
    topics: list[str] = []
    queues: list[str] = []
    for destination in (*DEFAULT_DESTINATIONS, *extra):
        name = destination.removeprefix(TOPIC_PREFIX).removeprefix(QUEUE_PREFIX)
        if not name or name == destination or any(c in name for c in "\n\r:*>"):
            raise DestinationError(f"cannot record {destination!r}: a destination is "
                                   f"/topic/NAME or /queue/NAME (no wildcards)")
        if queue_of(destination) is not None:
            raise DestinationError(f"cannot record {destination!r}: {COPY_PREFIX}* topics are "
                                   f"the broker's copies of work queues; name the queue")
        chosen = queues if destination.startswith(QUEUE_PREFIX) else topics
        if destination not in chosen:
            chosen.append(destination)
    return Recording(tuple(topics), () if topics_only else tuple(queues))


# The broker configuration that copies ``queues``, as the error of a failed probe shows it.
_CLASSIC = """  <compositeQueue name="{name}" forwardOnly="false">
    <forwardTo>
      <topic physicalName="{copy}"/>
    </forwardTo>
  </compositeQueue>"""
_ARTEMIS = """  <divert name="swf-copy-{name}">
    <address>{queue}</address>
    <forwarding-address>{topic}</forwarding-address>
    <exclusive>false</exclusive>
  </divert>"""


def copy_configuration(queues: Iterable[str]) -> str:
    """The broker configuration to add so each queue is copied: ActiveMQ Classic's
    ``<compositeQueue>`` entries (inside ``<destinationInterceptors><virtualDestinationInterceptor>
    <virtualDestinations>``, as in deploy/activemq/activemq.xml), and Artemis's ``<divert>``
    (inside ``<diverts>`` of broker.xml; with the STOMP acceptor's ``/queue/``, ``/topic/``
    prefixes, as swf-testbed:docs/artemis-queue-configuration.md shows it)."""
    queues = list(queues)
    classic = "\n".join(_CLASSIC.format(name=queue.removeprefix(QUEUE_PREFIX),
                                        copy=copy_topic(queue).removeprefix(TOPIC_PREFIX))
                        for queue in queues)
    artemis = "\n".join(_ARTEMIS.format(name=queue.removeprefix(QUEUE_PREFIX), queue=queue,
                                        topic=copy_topic(queue)) for queue in queues)
    return (f"ActiveMQ Classic (activemq.xml, in <virtualDestinations>):\n{classic}\n"
            f"Artemis (broker.xml, in <diverts>):\n{artemis}")


# What an in-process BrokerRecorder subscribes to unless told otherwise.
RECORDED_DESTINATIONS = recording().subscriptions
