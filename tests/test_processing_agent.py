"""The processing agent's decisions, event by event, and whole runs against the local adapters.

Events are built the way the store builds them (raw body -> ``eventstore.catalog.examine``), and
every message the agent emits or an adapter completes is run through the catalog too, so an
invalid message fails the test.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

import orjson
import pytest

from agents.base import Adapter, Command, Send, shift
from agents.batch.local import LocalExecutor
from agents.ddm.local import LocalCatalog
from agents.processing import ProcessingAgent
from eventstore.catalog import examine
from eventstore.envelope import TOPIC, Event
from eventstore.identity import event_id

NS = "test"
EXEC = "exec-1"
RUN = 100
T0 = "2025-01-01T00:00:00.000000Z"
AGENT = "processing-1"
_ids = itertools.count(1)
_positions = itertools.count(1)


def at(seconds: float) -> str:
    return shift(T0, seconds)


def to_event(message: dict[str, Any]) -> Event:
    """A stored event, as the store would read it back (normalized ``data``)."""
    body = orjson.dumps(message)
    verdict = examine(body, TOPIC)
    assert verdict.reason is None, f"{message.get('msg_type')}: {verdict.reason}"
    return Event(next(_positions), event_id(verdict.msg_id, {}, TOPIC, body),
                 verdict.sent_at or T0, TOPIC, {}, body, verdict.msg_type, verdict.namespace,
                 verdict.execution_id, verdict.run_id, verdict.sender, verdict.sent_at,
                 verdict.schema_version, verdict.reason, verdict.data)


def msg(msg_type: str, seconds: float, run: int | None = RUN, *, execution: str = EXEC,
        sender: str = "daq", namespace: str = NS, **payload: Any) -> dict[str, Any]:
    return {"msg_type": msg_type, "msg_id": f"in-{next(_ids)}", "namespace": namespace,
            "execution_id": execution, "run_id": run, "sender": sender,
            "timestamp": at(seconds), **payload}


def imminent(seconds: float = 0, run: int = RUN, processing: dict | None = None,
             **payload: Any) -> dict[str, Any]:
    return msg("run_imminent", seconds, run, state="imminent",
               workflow_params={"processing": processing or {}}, **payload)


def stf(seq: int, seconds: float, run: int = RUN, *, size: Any = 1000,
        checksum: Any = "0a1b2c3d", name: str | None = None) -> dict[str, Any]:
    return msg("stf_ready", seconds, run, sender="data-1",
               filename=name or f"swf.{run}.{seq:06d}.stf", size_bytes=size, checksum=checksum,
               file_url=f"file:///data/swf.{run}.{seq:06d}.stf", sequence=seq)


def end(seconds: float, total: int | None, run: int = RUN) -> dict[str, Any]:
    return msg("end_run", seconds, run, total_stf_files=total)


def heartbeat(seconds: float, sender: str = AGENT) -> dict[str, Any]:
    return msg("agent_heartbeat", seconds, None, sender=sender, agent_type="processing")


class ScriptedBatch(Adapter):
    """A batch system whose submit and status replies are scripted by the test."""

    def __init__(self, statuses: list[str], submit: dict | None = None) -> None:
        self.statuses = list(statuses)
        self.submit = submit or {"task_id": 17957, "status": "submitted", "error": None}
        self.commands: list[Command] = []

    def execute(self, command: Command) -> dict[str, Any]:
        self.commands.append(command)
        reply = dict(command.reply)
        if command.action == "submit_task":
            reply.update(self.submit)
        else:
            status = self.statuses.pop(0) if self.statuses else "unknown"
            reply.update(status=status, error="lost" if status == "unknown" else None)
        return reply


class Bus:
    """A minimal simulated-time bus: delivers messages in (time, publication) order to the
    agent, executes its commands on the adapters and publishes their replies (at ``at``)."""

    def __init__(self, agent: ProcessingAgent, adapters: dict[str, Adapter]) -> None:
        self.agent = agent
        self.adapters = adapters
        self.log: list[Event] = []
        self.commands: list[Command] = []
        self._queue: list[tuple[str, int, dict[str, Any]]] = []
        self._seq = itertools.count()

    def publish(self, *messages: dict[str, Any]) -> Bus:
        for message in messages:
            heapq.heappush(self._queue, (to_event(message).time, next(self._seq), message))
        return self

    def run(self, limit: int = 100_000) -> Bus:
        for _ in range(limit):
            if not self._queue:
                return self
            _, _, message = heapq.heappop(self._queue)
            event = to_event(message)
            self.log.append(event)
            for output in self.agent.handle(event):
                if isinstance(output, Send):
                    self.publish(output.message)
                else:
                    self.commands.append(output)
                    reply = self.adapters[output.adapter].execute(output)
                    if output.at is not None:
                        assert reply["timestamp"] == output.at
                    self.publish(reply)
        raise AssertionError("bus did not settle")

    def of(self, msg_type: str) -> list[dict[str, Any]]:
        return [event.data for event in self.log if event.msg_type == msg_type]

    def actions(self, action: str) -> list[Command]:
        return [command for command in self.commands if command.action == action]


@pytest.fixture
def agent() -> ProcessingAgent:
    return ProcessingAgent(AGENT, NS)


@pytest.fixture
def catalog(tmp_path) -> LocalCatalog:
    return LocalCatalog(tmp_path / "ddm")


@pytest.fixture
def bus(agent, catalog, tmp_path) -> Bus:
    return Bus(agent, {"ddm": catalog, "batch": LocalExecutor(tmp_path / "batch")})


def reply_to(command: Command, **fields: Any) -> Event:
    return to_event({**command.reply, **fields})


def only(outputs: list, kind: type) -> Any:
    assert len(outputs) == 1 and isinstance(outputs[0], kind), outputs
    return outputs[0]


def full_run(bus: Bus, files: int, *, total: int | None = None, run: int = RUN) -> Bus:
    bus.publish(imminent(0, run), *(stf(i, i, run) for i in range(1, files + 1)),
                end(files + 1, files if total is None else total, run))
    return bus.run()


# --- one decision at a time ------------------------------------------------------------------

def test_run_imminent_opens_the_run_dataset(agent):
    command = only(agent.handle(to_event(imminent(processing={"scope": "group.test"}))), Command)
    assert (command.adapter, command.action) == ("ddm", "add_dataset")
    assert command.params == {"scope": "group.test", "name": "swf.100.run",
                              "metadata": {"run_number": 100}}
    assert command.reply["msg_type"] == "dataset_opened"
    assert (command.reply["scope"], command.reply["dataset"]) == ("group.test", "swf.100.run")
    assert (command.reply["sender"], command.reply["run_id"]) == (AGENT, RUN)
    assert command.reply["execution_id"] == EXEC and command.reply["timestamp"] == at(0)


def test_run_imminent_dataset_field_names_the_dataset(agent):
    command = only(agent.handle(to_event(imminent(dataset="group.other:custom.100"))), Command)
    assert (command.params["scope"], command.params["name"]) == ("group.other", "custom.100")


def test_other_namespaces_and_rejected_events_are_ignored(agent):
    assert agent.handle(to_event(msg("run_imminent", 0, namespace="elsewhere"))) == []
    rejected = to_event(imminent())
    rejected.reject_reason = "broken"
    assert agent.handle(rejected) == []


def test_stf_ready_before_dataset_opened_waits_then_attaches(agent):
    opening = only(agent.handle(to_event(imminent())), Command)
    assert agent.handle(to_event(stf(1, 1))) == []
    attach = only(agent.handle(reply_to(opening, outcome="ok", error=None)), Command)
    assert (attach.adapter, attach.action) == ("ddm", "attach")
    assert attach.params == {"scope": "group.daq", "dataset": "swf.100.run", "rse": "DAQ_DISK",
                             "files": [{"name": "swf.100.000001.stf", "size_bytes": 1000,
                                        "checksum": "0a1b2c3d",
                                        "file_url": "file:///data/swf.100.000001.stf"}]}
    assert attach.reply["msg_type"] == "file_attached"
    assert attach.reply["name"] == "swf.100.000001.stf"


def test_stf_ready_before_run_imminent_is_held(agent):
    assert agent.handle(to_event(stf(1, 1))) == []
    outputs = agent.handle(to_event(imminent(2)))
    assert [o.action for o in outputs] == ["add_dataset"]
    attach = only(agent.handle(reply_to(outputs[0], outcome="ok")), Command)
    assert attach.params["files"][0]["name"] == "swf.100.000001.stf"


def test_events_of_another_execution_of_the_run_do_not_mix(agent):
    only(agent.handle(to_event(imminent())), Command)
    assert agent.handle(to_event(msg("end_run", 5, execution="exec-0", total_stf_files=0))) == []
    early = msg("stf_ready", 6, execution="exec-2", sender="data-1", filename="swf.100.x.stf",
                size_bytes=1, checksum="00000001")
    assert agent.handle(to_event(early)) == []  # held for its own execution
    retry = agent.handle(to_event(imminent(7, execution="exec-2")))
    assert [o.action for o in retry] == ["add_dataset"]  # the held file waits for the opening
    attach = only(agent.handle(reply_to(retry[0], outcome="ok")), Command)
    assert attach.params["files"][0]["name"] == "swf.100.x.stf"
    assert attach.reply["execution_id"] == "exec-2"


def test_checksum_forms_are_normalized_before_attaching(agent):
    opening = only(agent.handle(to_event(imminent())), Command)
    agent.handle(reply_to(opening, outcome="ok"))
    attach = only(agent.handle(to_event(stf(1, 1, checksum="ad:1B2C3D"))), Command)
    assert attach.params["files"][0]["checksum"] == "001b2c3d"


def test_replies_count_only_when_they_answer_our_command(agent):
    opening = only(agent.handle(to_event(imminent())), Command)
    forged = {**opening.reply, "msg_id": "someone-else", "outcome": "ok"}
    assert agent.handle(to_event(forged)) == []
    other_sender = {**opening.reply, "sender": "processing-2", "outcome": "ok"}
    assert agent.handle(to_event(other_sender)) == []
    assert agent.handle(to_event(stf(1, 1))) == []  # still waiting for the real reply


def test_decisions_are_deterministic(tmp_path):
    inputs = [imminent(0), stf(1, 1), stf(2, 1), stf(2, 2), stf(3, 3, checksum=""), end(4, 4),
              heartbeat(70)]

    def drive(directory) -> list[bytes]:
        bus = Bus(ProcessingAgent(AGENT, NS), {"ddm": LocalCatalog(directory / "ddm"),
                                               "batch": LocalExecutor(directory / "batch")})
        return [event.body for event in bus.publish(*inputs).run().log]
    first = drive(tmp_path / "a")
    assert first == drive(tmp_path / "b")
    assert len(first) > len(inputs) + 8


# --- whole runs against the local catalog and executor ---------------------------------------

def test_single_file_run(bus, catalog):
    full_run(bus, 1)
    assert [d["outcome"] for d in bus.of("dataset_opened")] == ["ok"]
    assert [(d["name"], d["outcome"]) for d in bus.of("file_attached")] == [
        ("swf.100.000001.stf", "ok")]
    closed = only(bus.of("dataset_closed"), dict)
    assert (closed["outcome"], closed["file_count"], closed["size_bytes"]) == ("ok", 1, 1000)
    assert closed["reason"] == "complete: 1 of 1 files accounted for"
    assert closed["timestamp"] == at(2)  # closed at end_run: nothing was missing
    submitted = only(bus.of("panda_task_submitted"), dict)
    assert (submitted["task_id"], submitted["status"]) == (1, "submitted")
    assert submitted["input_dataset"] == "group.daq:swf.100.run"
    assert submitted["output_dataset"] == "user.swf.swf.100.processed"
    assert submitted["metadata"] == {"run_number": 100, "execution_id": EXEC, "file_count": 1,
                                     "size_bytes": 1000, "files_failed": 0}
    assert [d["status"] for d in bus.of("panda_task_status")] == ["finished"]
    assert bus.of("panda_task_status")[0]["timestamp"] == at(12)  # polled poll_interval later
    done = only(bus.of("run_processed"), dict)
    assert (done["status"], done["task_id"], done["error"]) == ("completed", 1, None)
    info = catalog.get_dataset("group.daq", "swf.100.run")
    assert not info["is_open"] and info["metadata"] == {"run_number": 100}


def test_task_parameters_are_prun_style(bus):
    bus.publish(imminent(processing={"site": "E1_JLAB", "nickname": "alice",
                                     "working_group": "EPIC", "vo": "eic"}),
                stf(1, 1), end(2, 1)).run()
    task = only(bus.actions("submit_task"), Command).params
    assert task == {"taskName": "user.alice.swf.100.processed", "inDS": "group.daq:swf.100.run",
                    "outDS": "user.alice.swf.100.processed", "vo": "eic", "site": "E1_JLAB",
                    "prodSourceLabel": "test", "workingGroup": "EPIC", "exec": "builtin",
                    "nJobs": 1, "noBuild": True,
                    "metadata": {"run_number": 100, "execution_id": EXEC, "file_count": 1,
                                 "size_bytes": 1000, "files_failed": 0}}


def test_five_file_run(bus, catalog):
    full_run(bus, 5)
    assert [d["outcome"] for d in bus.of("file_attached")] == ["ok"] * 5
    closed = only(bus.of("dataset_closed"), dict)
    assert (closed["file_count"], closed["size_bytes"]) == (5, 5000)
    assert [f["name"] for f in catalog.list_files("group.daq", "swf.100.run")] == [
        f"swf.100.{i:06d}.stf" for i in range(1, 6)]
    assert len(bus.actions("submit_task")) == 1
    assert only(bus.of("run_processed"), dict)["status"] == "completed"


def test_rapid_fire_200_files_with_identical_timestamps(bus, catalog):
    bus.publish(imminent(0), *(stf(i, 1) for i in range(1, 201)), end(1, 200)).run()
    attached = bus.of("file_attached")
    assert len(attached) == 200 and {d["outcome"] for d in attached} == {"ok"}
    assert len({d["msg_id"] for d in attached}) == 200
    closed = only(bus.of("dataset_closed"), dict)
    assert (closed["file_count"], closed["reason"]) == (200, "complete: 200 of 200 files "
                                                             "accounted for")
    assert catalog.get_dataset("group.daq", "swf.100.run")["file_count"] == 200
    assert len(bus.actions("submit_task")) == 1
    assert only(bus.of("run_processed"), dict)["status"] == "completed"


def test_file_announced_twice_is_registered_once(bus, catalog):
    bus.publish(imminent(0), stf(1, 1), stf(1, 2, size=2000), stf(2, 3), end(4, 2)).run()
    outcomes = [(d["name"], d["outcome"]) for d in bus.of("file_attached")]
    assert outcomes == [("swf.100.000001.stf", "ok"), ("swf.100.000001.stf", "duplicate"),
                        ("swf.100.000002.stf", "ok")]
    duplicate = bus.of("file_attached")[1]
    assert duplicate["reason"] == ("swf.100.000001.stf already announced for run 100 at "
                                   f"{at(1)}; not registered twice (this announcement differs "
                                   "in size_bytes)")
    assert duplicate["error"] is None and duplicate["sender"] == AGENT
    assert len(bus.actions("attach")) == 2
    closed = only(bus.of("dataset_closed"), dict)
    assert (closed["file_count"], closed["size_bytes"]) == (2, 2000)  # the first size is kept
    assert only(bus.of("run_processed"), dict)["status"] == "completed"


@pytest.mark.parametrize(("checksum", "size", "text"), [
    (None, 1000, "adler32 is missing (empty checksum)"),
    ("", 1000, "adler32 is missing (empty checksum)"),
    ("xyz", 1000, "adler32 'xyz' does not match"),
    ("0a1b2c3d", None, "bytes is missing (null size)"),
])
def test_unacceptable_replica_is_an_error_outcome_and_still_accounted(bus, catalog, checksum,
                                                                      size, text):
    bus.publish(imminent(0), stf(1, 1), stf(2, 2, checksum=checksum, size=size), stf(3, 3),
                end(4, 3)).run()
    assert len(bus.actions("attach")) == 2  # the catalog is not asked to take a bad replica
    bad = bus.of("file_attached")[1]
    assert (bad["name"], bad["outcome"]) == ("swf.100.000002.stf", "error")
    assert bad["error"].startswith("InvalidObject: not attached: ") and text in bad["error"]
    closed = only(bus.of("dataset_closed"), dict)
    assert (closed["file_count"], closed["reason"]) == (2, "complete: 3 of 3 files "
                                                           "accounted for")
    assert closed["timestamp"] == at(4)  # no waiting for a timeout
    assert only(bus.of("panda_task_submitted"), dict)["metadata"]["files_failed"] == 1
    done = only(bus.of("run_processed"), dict)
    assert (done["status"], done["files_failed"]) == ("completed", 1)
    assert [f["name"] for f in catalog.list_files("group.daq", "swf.100.run")] == [
        "swf.100.000001.stf", "swf.100.000003.stf"]


@pytest.mark.parametrize("size", [0, 1 << 30])
def test_zero_and_one_gib_sizes_are_accepted(bus, catalog, size):
    bus.publish(imminent(0), stf(1, 1, size=size), end(2, 1)).run()
    assert only(bus.of("file_attached"), dict)["outcome"] == "ok"
    assert only(bus.of("dataset_closed"), dict)["size_bytes"] == size
    assert catalog.list_files("group.daq", "swf.100.run")[0]["bytes"] == size
    assert only(bus.of("run_processed"), dict)["status"] == "completed"


def test_catalog_refusal_is_recorded_and_accounted(bus, catalog):
    """A file the agent lets through but the catalog refuses (an illegal DID name)."""
    bus.publish(imminent(0), stf(1, 1, name="bad name.stf"), stf(2, 2), end(3, 2)).run()
    bad = bus.of("file_attached")[0]
    assert bad["outcome"] == "error" and "does not match" in bad["error"]
    assert only(bus.of("dataset_closed"), dict)["file_count"] == 1


def test_end_run_before_all_files_closes_on_timeout_with_reason(bus):
    bus.publish(imminent(0), stf(1, 1), stf(2, 2), end(3, 5),
                heartbeat(62.9), heartbeat(63), heartbeat(64)).run()
    closed = only(bus.of("dataset_closed"), dict)
    assert closed["reason"] == "timeout: 2 of 5 files accounted for"
    assert closed["timestamp"] == at(63)  # the first event at end_run + close_timeout
    assert (closed["outcome"], closed["file_count"]) == ("ok", 2)
    assert len(bus.actions("submit_task")) == 1
    assert only(bus.of("run_processed"), dict)["status"] == "completed"


def test_extra_announcements_do_not_close_before_the_daqs_last_file(bus):
    """Files numbered outside end_run's 1..N (injected by hand, re-announced under another
    number) are attached but never stand in for one of the DAQ's own files."""
    bus.publish(imminent(0), stf(1, 1), stf(7, 2), end(3, 2), stf(2, 4)).run()
    closed = only(bus.of("dataset_closed"), dict)  # not at end_run (t=3), when 2 had settled
    assert (closed["timestamp"], closed["reason"]) == (at(4), "complete: 2 of 2 files "
                                                              "accounted for")
    assert closed["file_count"] == 3  # the extra file is in the dataset all the same


def test_agent_wakes_itself_up_at_the_close_deadline(bus):
    """No other event after end_run (the embedded runtime stops ticking when idle)."""
    bus.publish(imminent(0), stf(1, 1), end(2, 3)).run()
    wake = only(bus.of("agent_heartbeat"), dict)
    assert (wake["sender"], wake["timestamp"]) == (AGENT, at(62))
    closed = only(bus.of("dataset_closed"), dict)
    assert (closed["timestamp"], closed["reason"]) == (at(62), "timeout: 1 of 3 files "
                                                               "accounted for")
    assert only(bus.of("run_processed"), dict)["status"] == "completed"


def test_no_wake_up_when_end_run_closes_at_once(bus):
    full_run(bus, 2)
    assert bus.of("agent_heartbeat") == []


def test_file_the_data_agent_could_not_register_is_an_error(bus):
    bus.publish(imminent(0), stf(1, 1),
                msg("stf_ready", 2, sender="data-1", filename="swf.100.000002.stf",
                    checksum=None, size_bytes=None, error="stf_gen carries no file_url"),
                end(3, 2)).run()
    bad = bus.of("file_attached")[1]
    assert (bad["outcome"], bad["error"]) == ("error", "not attached: stf_gen carries no "
                                                       "file_url")
    assert only(bus.of("dataset_closed"), dict)["reason"] == "complete: 2 of 2 files " \
                                                             "accounted for"


def test_close_timeout_comes_from_the_workflow(bus):
    bus.publish(imminent(0, processing={"close_timeout": 5}), stf(1, 1), end(2, 2),
                heartbeat(6.5), heartbeat(7)).run()
    assert only(bus.of("dataset_closed"), dict)["timestamp"] == at(7)


def test_late_file_after_timeout_close_is_refused_by_the_catalog(bus):
    bus.publish(imminent(0), stf(1, 1), end(2, 2), heartbeat(62), stf(2, 70)).run()
    late = bus.of("file_attached")[-1]
    assert late["name"] == "swf.100.000002.stf" and late["outcome"] == "error"
    assert late["error"].startswith("UnsupportedOperation: ")
    assert len(bus.actions("submit_task")) == 1


def test_missing_total_closes_when_announced_files_are_accounted(bus):
    bus.publish(imminent(0), stf(1, 1), stf(2, 2), end(3, None)).run()
    assert only(bus.of("dataset_closed"), dict)["reason"] == "complete: 2 of 2 files " \
                                                             "accounted for"


def test_duplicate_end_run_and_dataset_closed_submit_one_task(agent, tmp_path):
    catalog = LocalCatalog(tmp_path / "ddm")
    opening = only(agent.handle(to_event(imminent())), Command)
    agent.handle(to_event(catalog.execute(opening)))
    attach = only(agent.handle(to_event(stf(1, 1))), Command)
    assert agent.handle(to_event(catalog.execute(attach))) == []
    end_event = to_event(end(2, 1))
    close = only(agent.handle(end_event), Command)
    assert close.action == "close"
    assert agent.handle(end_event) == []  # the same event delivered again
    assert agent.handle(to_event(end(3, 1))) == []  # a second end_run message
    closed_event = to_event(catalog.execute(close))
    submit = only(agent.handle(closed_event), Command)
    assert submit.action == "submit_task"
    assert agent.handle(closed_event) == []  # dataset_closed delivered twice
    again = {**closed_event.data, "msg_id": "dataset-closed-copy"}
    assert agent.handle(to_event(again)) == []
    submitted = reply_to(submit, task_id=5, status="submitted")
    poll = only(agent.handle(submitted), Command)
    assert agent.handle(submitted) == []  # no second poll chain either
    assert poll.action == "status" and poll.at == shift(at(2), 10)


def test_task_is_polled_until_terminal(agent):
    batch = ScriptedBatch(["running", "running", "finished"])
    bus = Bus(agent, {"ddm": LocalCatalog.__new__(LocalCatalog), "batch": batch})
    bus.adapters["ddm"] = _InstantDdm()
    bus.publish(imminent(0), stf(1, 1), end(2, 1)).run()
    assert [d["status"] for d in bus.of("panda_task_status")] == ["running", "running",
                                                                  "finished"]
    assert [d["timestamp"] for d in bus.of("panda_task_status")] == [at(12), at(22), at(32)]
    done = only(bus.of("run_processed"), dict)
    assert (done["status"], done["task_id"], done["timestamp"]) == ("completed", 17957, at(32))


@pytest.mark.parametrize("final", ["failed", "aborted", "cancelled", "closed", "broken"])
def test_task_failure_states_fail_the_run(agent, final):
    bus = Bus(agent, {"ddm": _InstantDdm(), "batch": ScriptedBatch(["running", final])})
    bus.publish(imminent(0), stf(1, 1), end(2, 1)).run()
    done = only(bus.of("run_processed"), dict)
    assert (done["status"], done["error"]) == ("failed", f"task 17957 {final}")


def test_done_is_success(agent):
    bus = Bus(agent, {"ddm": _InstantDdm(), "batch": ScriptedBatch(["done"])})
    bus.publish(imminent(0), stf(1, 1), end(2, 1)).run()
    assert only(bus.of("run_processed"), dict)["status"] == "completed"


def test_unknown_task_status_three_times_fails_the_run(agent):
    bus = Bus(agent, {"ddm": _InstantDdm(), "batch": ScriptedBatch(["running"])})
    bus.publish(imminent(0), stf(1, 1), end(2, 1)).run()
    assert len(bus.of("panda_task_status")) == 4
    done = only(bus.of("run_processed"), dict)
    assert done["error"] == "task 17957 status unknown 3 times in a row: lost"


def test_failing_payload_fails_the_run_with_its_error(tmp_path):
    agent = ProcessingAgent(AGENT, NS)
    bus = Bus(agent, {"ddm": LocalCatalog(tmp_path / "ddm"),
                      "batch": LocalExecutor(tmp_path / "batch")})
    bus.publish(imminent(0, processing={"payload": "echo 'cannot read input' >&2; exit 2"}),
                stf(1, 1), end(2, 1)).run()
    done = only(bus.of("run_processed"), dict)
    assert (done["status"], done["task_id"]) == ("failed", 1)
    assert done["error"] == "task 1 failed: payload exited with status 2: cannot read input"


def test_submission_failure_fails_the_run(agent):
    batch = ScriptedBatch([], submit={"task_id": None, "status": "failed",
                                      "error": "PanDA unreachable (255)"})
    bus = Bus(agent, {"ddm": _InstantDdm(), "batch": batch})
    bus.publish(imminent(0), stf(1, 1), end(2, 1)).run()
    done = only(bus.of("run_processed"), dict)
    assert done["error"] == "task submission failed: PanDA unreachable (255)"
    assert len(batch.commands) == 1


def test_empty_dataset_is_not_submitted(bus):
    bus.publish(imminent(0), end(1, 0)).run()
    assert only(bus.of("dataset_closed"), dict)["file_count"] == 0
    assert bus.actions("submit_task") == []
    assert only(bus.of("run_processed"), dict)["error"] == (
        "dataset group.daq:swf.100.run is empty: nothing to process")


def test_dataset_open_failure_fails_files_and_run(bus):
    bus.publish(imminent(0, processing={"scope": "bad scope"}), stf(1, 1), end(2, 1)).run()
    opened = only(bus.of("dataset_opened"), dict)
    assert opened["outcome"] == "error" and opened["error"].startswith("InvalidObject")
    attached = only(bus.of("file_attached"), dict)
    assert attached["outcome"] == "error" and "is not open: InvalidObject" in attached["error"]
    assert bus.actions("close") == [] and bus.actions("submit_task") == []
    done = only(bus.of("run_processed"), dict)
    assert done["status"] == "failed" and "could not be opened" in done["error"]


def test_dataset_never_confirmed_open_times_out(agent):
    only(agent.handle(to_event(imminent())), Command)  # the reply never comes
    agent.handle(to_event(stf(1, 1)))
    wake = only(agent.handle(to_event(end(2, 1))), Send).message
    assert (wake["msg_type"], wake["sender"], wake["timestamp"]) == ("agent_heartbeat", AGENT,
                                                                     at(62))
    assert agent.handle(to_event(heartbeat(61.9, sender="data-1"))) == []
    done = only(agent.handle(to_event(wake)), Send).message
    assert done["msg_type"] == "run_processed" and done["run_id"] == RUN
    assert done["error"].startswith("timeout: dataset group.daq:swf.100.run was never")


def test_close_failure_fails_the_run(agent):
    opening = only(agent.handle(to_event(imminent())), Command)
    agent.handle(reply_to(opening, outcome="ok"))
    close = only(agent.handle(to_event(end(1, 0))), Command)
    failed = only(agent.handle(reply_to(close, outcome="error",
                                        error="UnsupportedOperation: cannot be changed")), Send)
    assert failed.message["status"] == "failed"
    assert failed.message["error"] == ("dataset group.daq:swf.100.run close failed: "
                                       "UnsupportedOperation: cannot be changed")


def test_retried_run_reuses_open_dataset_without_double_registration(bus, catalog):
    bus.publish(imminent(0), stf(1, 1), stf(2, 2)).run()  # crashed before end_run
    retry = [imminent(100, execution="exec-2"),
             *(msg("stf_ready", 100 + i, execution="exec-2", sender="data-1",
                   filename=f"swf.100.{i:06d}.stf", size_bytes=1000, checksum="0a1b2c3d")
               for i in (1, 2, 3)),
             msg("end_run", 104, execution="exec-2", total_stf_files=3)]
    bus.publish(*retry).run()
    opened = bus.of("dataset_opened")
    assert [d["outcome"] for d in opened] == ["ok", "exists"]
    assert opened[1]["error"].startswith("DataIdentifierAlreadyExists") and opened[1]["is_open"]
    second = [d for d in bus.of("file_attached") if d["execution_id"] == "exec-2"]
    assert [d["outcome"] for d in second] == ["duplicate", "duplicate", "ok"]
    assert "already attached" in second[0]["reason"]
    closed = only(bus.of("dataset_closed"), dict)
    assert (closed["file_count"], closed["execution_id"]) == (3, "exec-2")
    assert only(bus.of("run_processed"), dict)["status"] == "completed"


def test_retried_run_with_closed_dataset_records_refusals(bus, catalog):
    full_run(bus, 1)
    bus.publish(imminent(100, execution="exec-2"),
                msg("stf_ready", 101, execution="exec-2", sender="data-1",
                    filename="swf.100.000009.stf", size_bytes=1, checksum="00000001"),
                msg("end_run", 102, execution="exec-2", total_stf_files=1)).run()
    second = [d for d in bus.log if d.execution_id == "exec-2" and d.sender == AGENT]
    by_type = {e.msg_type: e.data for e in second}
    assert (by_type["dataset_opened"]["outcome"], by_type["dataset_opened"]["is_open"]) == (
        "exists", False)
    assert by_type["file_attached"]["error"].startswith("UnsupportedOperation: ")
    assert by_type["dataset_closed"]["error"].startswith("UnsupportedOperation: ")
    assert by_type["run_processed"]["status"] == "failed"
    assert len(bus.actions("submit_task")) == 1  # only the first attempt's


def test_two_runs_close_independently_on_one_heartbeat(bus):
    bus.publish(imminent(0, 1), imminent(0, 2), stf(1, 1, 1), stf(1, 1, 2), end(2, 3, 1),
                end(2, 3, 2), heartbeat(70)).run()
    closed = bus.of("dataset_closed")
    assert sorted(d["run_id"] for d in closed) == [1, 2]
    assert len({d["msg_id"] for d in closed}) == 2
    assert len(bus.actions("submit_task")) == 2
    assert sorted(d["task_id"] for d in bus.of("run_processed")) == [1, 2]


class _InstantDdm(Adapter):
    """A catalog that accepts everything (for tests about the batch side)."""

    def execute(self, command: Command) -> dict[str, Any]:
        reply = dict(command.reply)
        reply.update(outcome="ok", error=None)
        if command.action == "close":
            reply.update(file_count=1, size_bytes=1000)
        return reply


# --- end to end: the prompt processing workflow through the embedded runtime ------------------

GIB = 1 << 30


@pytest.fixture
def store(sqlite_url):
    from eventstore.store import EventStore

    with EventStore(sqlite_url) as opened:
        yield opened


def prompt_runtime(store, data_dir, *overrides: str, agent_types: list[str] | None = None):
    from agents.config import load_workflow
    from agents.runtime import prepare

    return prepare(store, load_workflow("prompt_processing", overrides), data_dir=data_dir,
                   user="tester", strict=True, agent_types=agent_types)


def stored(store, execution_id: str | None = None) -> list[dict[str, Any]]:
    return [event.data for event in store.read(execution_id=execution_id) if event.data]


def kinds(messages: list[dict[str, Any]], msg_type: str) -> list[dict[str, Any]]:
    return [m for m in messages if m["msg_type"] == msg_type]


def projected(store, table: str, **where: Any) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from projections import tables
    from projections.projector import Projector

    Projector(store).catch_up()
    target = getattr(tables, table)
    query = sa.select(target).where(*(target.c[k] == v for k, v in where.items()))
    with store.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


class Injector:
    """Messages of an upstream DAQ and data agent for a processing-only runtime."""

    def __init__(self, runtime, run: int | None = None) -> None:
        self.runtime, self.run = runtime, run or runtime.run_id
        self.t0 = runtime.start_time
        self.count = itertools.count()

    def __call__(self, msg_type: str, seconds: float, sender: str = "daq", **payload: Any
                 ) -> None:
        self.runtime.publish({
            "msg_type": msg_type, "msg_id": f"{self.runtime.execution_id}-{next(self.count)}",
            "namespace": self.runtime.agents[0].namespace,
            "execution_id": self.runtime.execution_id, "run_id": self.run, "sender": sender,
            "timestamp": shift(self.t0, seconds), **payload})

    def imminent(self) -> None:
        self("run_imminent", 0, workflow="prompt_processing",
             workflow_params=self.runtime.params, dataset=f"swf.{self.run}.run")

    def stf(self, seq: int, seconds: float, size: Any = 4096, checksum: Any = "ad:1a2b3c4d"
            ) -> None:
        self("stf_ready", seconds, "data-1", filename=f"swf.{self.run}.{seq:06d}.stf",
             file_url=f"file:///data/swf.{self.run}.{seq:06d}.stf", size=size,
             checksum=checksum, sequence=seq)


def test_prompt_workflow_end_to_end(store, tmp_path):
    runtime = prompt_runtime(store, tmp_path / "data")
    result = runtime.run()
    run, execution = runtime.run_id, runtime.execution_id
    assert result.errors == 0
    log = stored(store, execution)
    ready = kinds(log, "stf_ready")
    assert len(ready) == 5
    assert [m["outcome"] for m in kinds(log, "file_attached")] == ["ok"] * 5
    closed = only(kinds(log, "dataset_closed"), dict)
    assert (closed["outcome"], closed["file_count"], closed["size_bytes"]) == ("ok", 5, 5 * 4096)
    assert only(kinds(log, "run_processed"), dict)["status"] == "completed"
    # the catalog: a closed dataset with exactly the STF files, size and checksum as announced
    catalog = LocalCatalog(tmp_path / "data" / "ddm")
    info = catalog.get_dataset("group.daq", f"swf.{run}.run")
    assert not info["is_open"] and info["metadata"] == {"run_number": run}
    assert [(f["name"], f["bytes"], f["adler32"]) for f in
            catalog.list_files("group.daq", f"swf.{run}.run")] == [
        (m["filename"], m["size_bytes"], m["checksum"]) for m in ready]
    # the batch system: one task, finished, its output carrying the run metadata
    executor = LocalExecutor(tmp_path / "data" / "batch")
    task = executor.task(1)
    assert executor.task(2) is None
    assert (task["status"], task["params"]["inDS"]) == ("finished", f"group.daq:swf.{run}.run")
    output = orjson.loads((executor.task_dir(1) / "myout.txt").read_bytes())
    assert output["metadata"]["run_number"] == run
    assert output["metadata"]["execution_id"] == execution
    # the projections
    dataset = only(projected(store, "datasets", run_number=run), dict)
    assert (dataset["state"], dataset["file_count"], dataset["error"]) == ("closed", 5, None)
    assert len(projected(store, "dataset_files", run_number=run)) == 5
    tasks = projected(store, "panda_tasks", run_number=run)
    assert [(t["task_id"], t["status"]) for t in tasks] == [(1, "finished")]


def test_replay_of_the_same_inputs_makes_the_same_decisions(sqlite_url, tmp_path):
    from eventstore.store import EventStore

    bodies = []
    for name in ("a", "b"):
        with EventStore(f"{sqlite_url}.{name}") as own:
            prompt_runtime(own, tmp_path / name).run()
            bodies.append([(e.msg_type, e.data["msg_id"]) for e in own.read() if e.data])
    assert bodies[0] == bodies[1]


def test_errors_are_visible_end_to_end(store, tmp_path):
    runtime = prompt_runtime(store, tmp_path / "data", agent_types=["processing"])
    inject = Injector(runtime, run=4242)
    inject.imminent()
    inject.stf(1, 1)
    inject.stf(2, 2, checksum="")
    inject.stf(3, 3, size=None)
    inject.stf(1, 4, size=999)  # announced twice
    inject.stf(4, 5, size=0)
    inject.stf(5, 6, size=GIB)
    inject("end_run", 7, total_files=6)  # file 6 never comes
    result = runtime.run()
    assert result.errors == 0
    log = stored(store)
    files = {(m["name"], m["outcome"]): m for m in kinds(log, "file_attached")}
    assert sorted(files) == [("swf.4242.000001.stf", "duplicate"), ("swf.4242.000001.stf", "ok"),
                             ("swf.4242.000002.stf", "error"), ("swf.4242.000003.stf", "error"),
                             ("swf.4242.000004.stf", "ok"), ("swf.4242.000005.stf", "ok")]
    assert "adler32 is missing (empty checksum)" in files[("swf.4242.000002.stf", "error")][
        "error"]
    assert "bytes is missing (null size)" in files[("swf.4242.000003.stf", "error")]["error"]
    assert "already announced" in files[("swf.4242.000001.stf", "duplicate")]["reason"]
    warnings = " | ".join(m["message"] for m in kinds(log, "agent_log"))
    for text in ("empty checksum", "null size", "already announced", "closing"):
        assert text in warnings
    closed = only(kinds(log, "dataset_closed"), dict)
    assert closed["reason"] == "timeout: 5 of 6 files accounted for"
    assert closed["timestamp"] == shift(runtime.start_time, 7 + 60)
    assert (closed["file_count"], closed["size_bytes"]) == (3, 4096 + 0 + GIB)
    assert only(kinds(log, "panda_task_submitted"), dict)["metadata"]["files_failed"] == 2
    assert only(kinds(log, "run_processed"), dict)["status"] == "completed"
    # projections: the files attached, the dataset closed (with the last file error kept)
    rows = projected(store, "dataset_files", run_number=4242)
    assert sorted((r["name"], r["size_bytes"]) for r in rows) == [
        ("swf.4242.000001.stf", 4096), ("swf.4242.000004.stf", 0), ("swf.4242.000005.stf", GIB)]
    dataset = only(projected(store, "datasets", run_number=4242), dict)
    assert dataset["state"] == "closed" and "null size" in dataset["error"]
    assert [t["status"] for t in projected(store, "panda_tasks", run_number=4242)] == [
        "finished"]


def test_rapid_fire_through_the_runtime(store, tmp_path):
    runtime = prompt_runtime(store, tmp_path / "data", agent_types=["processing"])
    inject = Injector(runtime, run=7)
    inject.imminent()
    for seq in range(1, 201):
        inject.stf(seq, 1)
    inject("end_run", 1, total_stf_files=200)
    assert runtime.run().errors == 0
    log = stored(store)
    assert len([m for m in kinds(log, "file_attached") if m["outcome"] == "ok"]) == 200
    closed = only(kinds(log, "dataset_closed"), dict)
    assert (closed["file_count"], closed["timestamp"]) == (200, shift(runtime.start_time, 1))
    assert len(kinds(log, "panda_task_submitted")) == 1
    assert projected(store, "datasets", run_number=7)[0]["file_count"] == 200


def test_failing_payload_end_to_end(store, tmp_path):
    runtime = prompt_runtime(store, tmp_path / "data",
                             "processing.payload=echo \"run $SWF_RUN_NUMBER: no input\" >&2; "
                             "exit 4")
    runtime.run()
    run = runtime.run_id
    done = only(kinds(stored(store), "run_processed"), dict)
    assert done["status"] == "failed"
    assert done["error"] == f"task 1 failed: payload exited with status 4: run {run}: no input"
    task = only(projected(store, "panda_tasks", run_number=run), dict)
    assert (task["status"], task["error"]) == ("failed", done["error"][len("task 1 failed: "):])


def test_retried_run_number_is_refused_and_never_submitted_twice(store, tmp_path):
    for _attempt in range(2):
        runtime = prompt_runtime(store, tmp_path / "data", agent_types=["processing"])
        inject = Injector(runtime, run=555)
        inject.imminent()
        inject.stf(1, 1)
        inject("end_run", 2, total_stf_files=1)
        assert runtime.run().errors == 0
    second = stored(store, runtime.execution_id)
    opened = only(kinds(second, "dataset_opened"), dict)
    assert (opened["outcome"], opened["is_open"]) == ("exists", False)
    assert opened["error"].startswith("DataIdentifierAlreadyExists")
    assert only(kinds(second, "file_attached"), dict)["error"].startswith("UnsupportedOperation")
    assert "cannot be changed" in only(kinds(second, "dataset_closed"), dict)["error"]
    assert only(kinds(second, "run_processed"), dict)["status"] == "failed"
    assert kinds(second, "panda_task_submitted") == []
    assert LocalExecutor(tmp_path / "data" / "batch").task(2) is None
    assert len(projected(store, "panda_tasks", run_number=555)) == 1
