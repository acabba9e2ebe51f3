"""The processing agent: one DDM dataset and ONE batch task per run (prompt processing).

Per run: ``run_imminent`` opens the dataset ``swf.{run}.run`` (command ``ddm add_dataset``); each
``stf_ready`` attaches its file (``ddm attach``); once ``end_run``'s N files are all accounted for
(each has an outcome: ok, error or duplicate), or ``close_timeout`` seconds after ``end_run`` by
the time of any later event, the dataset is closed (``ddm close``); a closed dataset is submitted
as one prun-style task (``batch submit_task``) whose status is polled (``batch status``) until it
is terminal; then ``run_processed`` says how the run ended (``terminated`` when the DAQ ended
it early: ``end_run`` with a ``reason``). Every adapter outcome comes back as an event (the
command's reply) and is matched to its command by ``msg_id``, so the agent's own messages and
redelivered or repeated events never advance a run twice.

Decisions are functions of the log, not of arrival order: every message of a run is ``decided``
(agents/base.py), its id from the run's book and the decision's key, its time the latest of the
inputs it waited for (a file's attach: its announcement and the dataset's opening; the close:
end_run, the opening and each counted file's outcome; a timeout: the deadline itself).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from agents import batch, ddm
from agents.base import Agent, Command, Output, Send, latest, shift
from agents.config import SCHEMA, param
from eventstore.envelope import Event, parse_time

log = logging.getLogger(__name__)

MAX_STATUS_ERRORS = 3  # consecutive "unknown" task statuses before the run is given up
MAX_ORPHAN_FILES = 10_000  # stf_ready held per run while its run_imminent has not been seen


def run_settings(workflow_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``[processing]`` parameters of one run (agents.config's schema: defaults, checks)."""
    return {key: param(workflow_params, f"processing.{key}") for key in SCHEMA["processing"]}


@dataclass(slots=True)
class FileEntry:
    name: str
    size_bytes: int | None
    checksum: str | None
    file_url: str | None
    announced_at: str
    sequence: int | None = None  # the DAQ's numbering: which of end_run's N files this is
    reply_id: str | None = None  # msg_id of the attach command's reply, once sent
    outcome: str | None = None  # ok / error / duplicate, once known
    error: str | None = None
    settled_at: str | None = None  # time of the event that gave it its outcome


@dataclass(slots=True)
class RunBook:
    """Everything the agent knows about one run of one execution."""

    run: int
    execution_id: str | None
    settings: dict[str, Any]  # the run's [processing] parameters (run_settings)
    scope: str
    dataset: str
    open_reply: str | None = None
    opened_at: str | None = None  # time of the dataset_opened reply
    dataset_state: str = "opening"  # opening -> open | failed
    dataset_error: str | None = None
    reused: bool = False  # the dataset existed already (a retried run)
    files: dict[str, FileEntry] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)  # announced before the dataset was open
    end_time: str | None = None
    stopped: bool = False  # the DAQ ended the run early (end_run with a reason)
    expected: int | None = None
    close_reply: str | None = None
    close_reason: str | None = None
    file_count: int | None = None
    size_bytes: int | None = None
    submit_reply: str | None = None  # set once: never a second task for a run
    task_id: int | None = None
    poll_reply: str | None = None
    polls: int = 0
    status_errors: int = 0
    done: bool = False  # run_processed emitted

    @property
    def dataset_did(self) -> str:
        return ddm.did(self.scope, self.dataset)

    accounted: int = 0  # files with an outcome (counted as they settle: no rescans)
    files_failed: int = 0
    settled_sequences: set[int] = field(default_factory=set)
    settled_unnumbered: int = 0

    def settle(self, entry: FileEntry, outcome: str, error: str | None, time: str) -> None:
        entry.outcome, entry.error, entry.settled_at = outcome, error, time
        self.accounted += 1
        self.files_failed += outcome == "error"
        if entry.sequence is None:
            self.settled_unnumbered += 1
        else:
            self.settled_sequences.add(entry.sequence)

    def settled_of(self, expected: int) -> int:
        """How many of the DAQ's ``expected`` files have an outcome. Numbered files count only
        within 1..expected, so extra announcements (a duplicate name under a new number, a file
        injected by hand) can never close the dataset before the DAQ's own last file."""
        in_range = sum(1 for sequence in self.settled_sequences if 1 <= sequence <= expected)
        return in_range + self.settled_unnumbered

    def close_inputs_at(self) -> str:
        """The latest time of what the close waited for: end_run, the dataset's opening and the
        outcomes of the files that count (see ``settled_of``)."""
        expected = self.expected
        times = [entry.settled_at for entry in self.files.values()
                 if entry.settled_at is not None and (
                     expected is None or entry.sequence is None
                     or 1 <= entry.sequence <= expected)]
        return latest(self.end_time, self.opened_at, *times)


class ProcessingAgent(Agent):
    agent_type: ClassVar[str] = "processing"

    def __init__(self, name: str, namespace: str) -> None:
        super().__init__(name=name, namespace=namespace)
        self.runs: dict[int, RunBook] = {}
        # stf_ready seen before its run_imminent, by (run, execution)
        self.orphans: dict[tuple[int, str | None], list[Event]] = {}

    def handle(self, event: Event) -> list[Output]:
        if not self.accepts(event):
            return []
        handler = self._handlers.get(event.msg_type or "")
        outputs: list[Output] = []
        if handler is not None and event.run_id is not None:
            outputs.extend(handler(self, event))
        outputs.extend(self._check_deadlines(event))
        return outputs

    # --- run and file events ---------------------------------------------------------------

    def _on_run_imminent(self, event: Event) -> list[Output]:
        data = event.data or {}
        run = event.run_id
        assert run is not None
        known = self.runs.get(run)
        if known is not None and known.execution_id == event.execution_id:
            log.info("run %s: run_imminent again for execution %s; already prepared", run,
                     event.execution_id)
            return []
        if known is not None:
            log.warning("run %s: new execution %s replaces %s (a retried run)", run,
                        event.execution_id, known.execution_id)
        settings = run_settings(data.get("workflow_params"))
        scope, dataset = ddm.split_did(data.get("dataset") or f"swf.{run}.run", settings["scope"])
        book = RunBook(run=run, execution_id=event.execution_id, settings=settings,
                       scope=scope, dataset=dataset)
        self.runs[run] = book
        reply = self._reply("dataset_opened", event, book, "open", scope=scope, dataset=dataset,
                            outcome=None, error=None)
        book.open_reply = reply["msg_id"]
        log.info("run %s: opening dataset %s", run, book.dataset_did)
        outputs: list[Output] = [Command("ddm", "add_dataset", {
            "scope": scope, "name": dataset,
            "metadata": {"run_number": run}}, reply=reply)]
        held = self.orphans.pop((run, event.execution_id), [])
        if event.execution_id is not None:  # files that named no execution belong to this one
            held += self.orphans.pop((run, None), [])
        for orphan in held:
            outputs.extend(self._on_stf_ready(orphan))
        return outputs

    def _on_stf_ready(self, event: Event) -> list[Output]:
        data = event.data or {}
        run = event.run_id
        assert run is not None
        if data.get("filename") is None:  # upstream's per-run "data ready": no file to attach
            return []
        book = self._book(event, quiet=True)
        if book is None:  # early (or for an execution of this run not announced yet): hold it
            held = self.orphans.setdefault((run, event.execution_id), [])
            if len(held) < MAX_ORPHAN_FILES:
                held.append(event)
            log.warning("run %s: stf_ready %s before the run_imminent of execution %s; held",
                        run, data["filename"], event.execution_id)
            return []
        name = data["filename"]
        first = book.files.get(name)
        if first is not None:
            return [self._duplicate(event, book, first, data)]
        entry = FileEntry(name=name, size_bytes=data.get("size_bytes"),
                          checksum=data.get("checksum"), file_url=data.get("file_url"),
                          announced_at=event.time, sequence=data.get("sequence"))
        book.files[name] = entry
        problem = ddm.replica_problem({"name": name, "bytes": entry.size_bytes,
                                       "adler32": entry.checksum})
        if data.get("error"):  # the data agent could not register the file itself
            outputs: list[Output] = [self._file_outcome(
                event, book, entry, "error", f"not attached: {data['error']}")]
        elif problem is not None:
            # The catalog would refuse this replica: record the refusal instead of asking.
            outputs = [self._file_outcome(event, book, entry, "error",
                                          f"InvalidObject: not attached: {problem}")]
        elif book.dataset_state == "opening":
            book.waiting.append(name)
            return []
        else:
            outputs = self._attach(event, book, entry)
        return outputs + self._maybe_close(event, book)

    def _duplicate(self, event: Event, book: RunBook, first: FileEntry,
                   data: dict[str, Any]) -> Send:
        differs = [label for label, old, new in (
            ("size_bytes", first.size_bytes, data.get("size_bytes")),
            ("checksum", first.checksum, data.get("checksum"))) if old != new]
        reason = (f"{first.name} already announced for run {book.run} at {first.announced_at}; "
                  f"not registered twice")
        if differs:
            reason += f" (this announcement differs in {', '.join(differs)})"
        log.warning("run %s: %s", book.run, reason)
        message = self._reply("file_attached", event, book,
                              f"dup/{first.name}/{event.event_id}",
                              scope=book.scope, dataset=book.dataset, name=first.name,
                              size_bytes=data.get("size_bytes"), checksum=data.get("checksum"),
                              outcome="duplicate", error=None, reason=reason)
        return Send(message)

    def _attach(self, event: Event, book: RunBook, entry: FileEntry) -> list[Output]:
        """Attach a file to the dataset: decided on its announcement and the dataset's
        opening, whichever came last."""
        if book.dataset_state == "failed":
            return [self._file_outcome(event, book, entry, "error",
                                       f"dataset {book.dataset_did} is not open: "
                                       f"{book.dataset_error}",
                                       time=latest(entry.announced_at, book.opened_at))]
        reply = self._reply("file_attached", event, book, f"attach/{entry.name}",
                            time=latest(entry.announced_at, book.opened_at), scope=book.scope,
                            dataset=book.dataset, name=entry.name,
                            size_bytes=entry.size_bytes, checksum=entry.checksum,
                            outcome=None, error=None)
        entry.reply_id = reply["msg_id"]
        params = {"scope": book.scope, "dataset": book.dataset, "rse": book.settings["rse"],
                  "files": [{"name": entry.name, "size_bytes": entry.size_bytes,
                             "checksum": entry.checksum, "file_url": entry.file_url}]}
        if book.reused:  # files of the earlier attempt are in the dataset already
            params["ignore_duplicate"] = True
        return [Command("ddm", "attach", params, reply=reply)]

    def _file_outcome(self, event: Event, book: RunBook, entry: FileEntry, outcome: str,
                      error: str, time: str | None = None) -> Send:
        when = time or event.time
        book.settle(entry, outcome, error, when)
        log.warning("run %s: file %s %s: %s", book.run, entry.name, outcome, error)
        return Send(self._reply("file_attached", event, book, f"attach/{entry.name}",
                                time=when, scope=book.scope, dataset=book.dataset, name=entry.name,
                                size_bytes=entry.size_bytes, checksum=entry.checksum,
                                outcome=outcome, error=error))

    def _on_end_run(self, event: Event) -> list[Output]:
        book = self._book(event)
        if book is None:
            return []
        if book.end_time is not None:
            log.info("run %s: end_run again; already ending", book.run)
            return []
        book.end_time = event.time
        book.stopped = bool((event.data or {}).get("reason"))
        book.expected = (event.data or {}).get("total_stf_files")
        outputs = self._maybe_close(event, book)
        if not outputs:
            outputs.append(self._wake_up(event, book))
        return outputs

    # --- adapter replies (matched to their command by msg_id) -----------------------------

    def _on_dataset_opened(self, event: Event) -> list[Output]:
        book = self._book(event, own=True)
        if book is None or event.event_id != book.open_reply or book.dataset_state != "opening":
            return []
        data = event.data or {}
        outcome = data.get("outcome")
        book.opened_at = event.time
        if outcome in ("ok", "exists"):
            book.dataset_state = "open"
            book.reused = outcome == "exists"
            if book.reused:
                log.warning("run %s: dataset %s exists already (%s); attaching to it", book.run,
                            book.dataset_did, "open" if data.get("is_open") else "closed")
        else:
            book.dataset_state = "failed"
            book.dataset_error = data.get("error") or f"outcome {outcome!r}"
            log.error("run %s: dataset %s not opened: %s", book.run, book.dataset_did,
                      book.dataset_error)
        outputs: list[Output] = []
        for name in book.waiting:
            outputs.extend(self._attach(event, book, book.files[name]))
        book.waiting.clear()
        return outputs + self._maybe_close(event, book)

    def _on_file_attached(self, event: Event) -> list[Output]:
        book = self._book(event, own=True)
        if book is None:
            return []
        data = event.data or {}
        entry = book.files.get(data["name"])
        if entry is None or entry.outcome is not None or event.event_id != entry.reply_id:
            return []
        book.settle(entry, data.get("outcome") or "error", data.get("error"), event.time)
        if entry.outcome == "error":
            log.warning("run %s: file %s not attached: %s", book.run, entry.name, entry.error)
        return self._maybe_close(event, book)

    def _on_dataset_closed(self, event: Event) -> list[Output]:
        book = self._book(event, own=True)
        if book is None or event.event_id != book.close_reply or book.submit_reply or book.done:
            return []
        data = event.data or {}
        if data.get("outcome") != "ok":
            return [self._finish(event, book, "failed",
                                 f"dataset {book.dataset_did} close failed: "
                                 f"{data.get('error') or data.get('outcome')}")]
        book.file_count, book.size_bytes = data.get("file_count"), data.get("size_bytes")
        if not book.file_count:
            return [self._finish(event, book, "failed",
                                 f"dataset {book.dataset_did} is empty: nothing to process")]
        return [self._submit(event, book)]

    def _on_task_submitted(self, event: Event) -> list[Output]:
        book = self._book(event, own=True)
        if book is None or event.event_id != book.submit_reply or book.done \
                or book.task_id is not None:
            return []
        data = event.data or {}
        if data.get("task_id") is None or data.get("error"):
            return [self._finish(event, book, "failed",
                                 f"task submission failed: {data.get('error') or 'no task id'}")]
        book.task_id = data["task_id"]
        return self._follow_task(event, book, data.get("status"), None)

    def _on_task_status(self, event: Event) -> list[Output]:
        book = self._book(event, own=True)
        if book is None or event.event_id != book.poll_reply or book.done:
            return []
        data = event.data or {}
        return self._follow_task(event, book, data.get("status"), data.get("error"))

    # --- decisions -------------------------------------------------------------------------

    def _maybe_close(self, event: Event, book: RunBook, *, timed_out: bool = False
                     ) -> list[Output]:
        if book.end_time is None or book.close_reply is not None or book.done:
            return []
        # A timeout is decided at the deadline, whichever later event noticed it.
        deadline = shift(book.end_time, book.settings["close_timeout"])
        if book.dataset_state == "failed":
            return [self._finish(event, book, "failed",
                                 f"dataset {book.dataset_did} could not be opened: "
                                 f"{book.dataset_error}",
                                 time=latest(book.end_time, book.opened_at))]
        expected = book.expected if book.expected is not None else len(book.files)
        accounted = book.settled_of(expected) if book.expected is not None else book.accounted
        if book.dataset_state == "opening":
            if not timed_out:
                return []
            return [self._finish(event, book, "failed",
                                 f"timeout: dataset {book.dataset_did} was never confirmed "
                                 f"open ({accounted} of {expected} files accounted for)",
                                 time=deadline)]
        if accounted < expected and not timed_out:
            return []
        reason = (f"{'timeout' if accounted < expected else 'complete'}: {accounted} of "
                  f"{expected} files accounted for")
        reply = self._reply("dataset_closed", event, book, "close",
                            time=deadline if accounted < expected else book.close_inputs_at(),
                            scope=book.scope,
                            dataset=book.dataset, outcome=None, error=None, file_count=None,
                            size_bytes=None, reason=reason)
        book.close_reply, book.close_reason = reply["msg_id"], reason
        (log.warning if accounted < expected else log.info)(
            "run %s: closing %s (%s)", book.run, book.dataset_did, reason)
        return [Command("ddm", "close", {"scope": book.scope, "dataset": book.dataset},
                        reply=reply)]

    def _check_deadlines(self, event: Event) -> list[Output]:
        """Close datasets whose close_timeout after end_run has passed by this event's time."""
        outputs: list[Output] = []
        now = None
        for book in self.runs.values():
            if book.end_time is None or book.close_reply is not None or book.done:
                continue
            now = now or parse_time(event.time)
            if now >= parse_time(shift(book.end_time, book.settings["close_timeout"])):
                outputs.extend(self._maybe_close(event, book, timed_out=True))
        return outputs

    def _wake_up(self, event: Event, book: RunBook) -> Send:
        """Our own heartbeat at the close deadline: an event at that time is then certain to
        come, even when nothing else is pending (the embedded runtime stops its periodic
        heartbeats when no work is left; a lost adapter reply leaves none)."""
        deadline = shift(book.end_time or event.time, book.settings["close_timeout"])
        return Send(self._reply("agent_heartbeat", event, book, "wake", time=deadline,
                                agent_type=self.agent_type, status="OK",
                                operational_state="PROCESSING",
                                reason=f"close deadline of {book.dataset_did}"))

    def _submit(self, event: Event, book: RunBook) -> Command:
        settings = book.settings
        output_dataset = f"user.{settings['nickname']}.swf.{book.run}.processed"
        metadata = {"run_number": book.run, "execution_id": book.execution_id,
                    "file_count": book.file_count, "size_bytes": book.size_bytes,
                    "files_failed": book.files_failed}
        # prun-style task parameters (option names as in prun's command line)
        params = {"taskName": output_dataset, "inDS": book.dataset_did, "outDS": output_dataset,
                  "vo": settings["vo"], "site": settings["site"],
                  "prodSourceLabel": settings["prod_source_label"],
                  "workingGroup": settings["working_group"], "exec": settings["payload"],
                  "nJobs": 1, "noBuild": True, "metadata": metadata}
        reply = self._reply("panda_task_submitted", event, book, "submit", task_id=None,
                            status=batch.UNKNOWN, input_dataset=book.dataset_did,
                            output_dataset=output_dataset, error=None, metadata=metadata)
        book.submit_reply = reply["msg_id"]
        log.info("run %s: submitting one task for %s", book.run, book.dataset_did)
        return Command("batch", "submit_task", params, reply=reply)

    def _follow_task(self, event: Event, book: RunBook, status: str | None,
                     error: str | None) -> list[Output]:
        if batch.is_terminal(status):
            outcome = "completed" if batch.succeeded(status) else "failed"
            problem = None if outcome == "completed" else (
                f"task {book.task_id} {status}" + (f": {error}" if error else ""))
            return [self._finish(event, book, outcome, problem)]
        book.status_errors = book.status_errors + 1 if status == batch.UNKNOWN else 0
        if book.status_errors >= MAX_STATUS_ERRORS:
            return [self._finish(event, book, "failed",
                                 f"task {book.task_id} status unknown {book.status_errors} "
                                 f"times in a row: {error}")]
        book.polls += 1
        at = shift(event.time, book.settings["poll_interval"])
        reply = self._reply("panda_task_status", event, book, f"poll/{book.polls}", time=at,
                            task_id=book.task_id, status=batch.UNKNOWN, error=None)
        book.poll_reply = reply["msg_id"]
        return [Command("batch", "status", {"task_id": book.task_id}, reply=reply, at=at)]

    def _finish(self, event: Event, book: RunBook, status: str, error: str | None,
                time: str | None = None) -> Send:
        book.done = True
        if status == "completed" and book.stopped:
            status = "terminated"
        (log.info if status == "completed" else log.error)(
            "run %s: processing %s%s", book.run, status, f": {error}" if error else "")
        return Send(self._reply("run_processed", event, book, "processed", time=time,
                                status=status,
                                task_id=book.task_id, error=error, dataset=book.dataset_did,
                                file_count=book.file_count, files_failed=book.files_failed))

    # --- helpers ---------------------------------------------------------------------------

    def _book(self, event: Event, *, own: bool = False, quiet: bool = False
              ) -> RunBook | None:
        """The book of the event's run and execution (an event naming no execution belongs to
        the run's current one); replies (``own``) count only when this agent sent them."""
        if own and event.sender != self.name:
            return None
        book = self.runs.get(event.run_id) if event.run_id is not None else None
        if book is not None and event.execution_id is not None \
                and event.execution_id != book.execution_id:
            book = None
        if book is None and not (own or quiet):
            log.warning("run %s: %s of execution %s, whose run_imminent was not seen; ignored",
                        event.run_id, event.msg_type, event.execution_id)
        return book

    def _reply(self, msg_type: str, cause: Event, book: RunBook, key: str, *,
               time: str | None = None, **payload: Any) -> dict[str, Any]:
        """A message of the run, decided: its id from the run's book and ``key`` (unique per
        decision), its time ``time`` (default: the cause's, for a single-input decision)."""
        return self.decided(msg_type, execution_id=book.execution_id, run_id=book.run,
                            time=time or cause.time, key=key, **payload)

    _handlers: ClassVar[dict[str, Any]] = {
        "run_imminent": _on_run_imminent,
        "stf_ready": _on_stf_ready,
        "end_run": _on_end_run,
        "dataset_opened": _on_dataset_opened,
        "file_attached": _on_file_attached,
        "dataset_closed": _on_dataset_closed,
        "panda_task_submitted": _on_task_submitted,
        "panda_task_status": _on_task_status,
    }
