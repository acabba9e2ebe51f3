"""The data agent: registers each STF file (size and adler32 from the file) as ``stf_ready``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

from agents.base import Agent, Command, Output, Send
from eventstore.envelope import Event

log = logging.getLogger("swf.agent.data")


@dataclass
class DataAgent(Agent):
    agent_type: ClassVar[str] = "data"
    _seen: set[tuple[int | None, str]] = field(default_factory=set, init=False, repr=False)

    def handle(self, event: Event) -> list[Output]:
        if event.msg_type != "stf_gen":
            return []
        data = event.data or {}
        filename = data["filename"]
        key = (event.run_id, filename)
        if key in self._seen:  # a redelivered stf_gen registers nothing twice
            return []
        self._seen.add(key)
        reply = self.message("stf_ready", event, key=filename, filename=filename,
                             file_url=data.get("file_url"), checksum=None, size_bytes=None,
                             sequence=data.get("sequence"))
        if data.get("error") or not data.get("file_url"):
            reason = data.get("error") or "stf_gen carries no file_url"
            log.warning("STF %s of run %s not registered: %s", filename, event.run_id, reason)
            reply["error"] = reason
            return [Send(reply)]
        return [Command("files", "stat", {"url": data["file_url"]}, reply=reply)]
