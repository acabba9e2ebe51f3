"""``--mermaid``: an execution as a Mermaid sequence diagram.

Participants are the senders (agents first, in the registry's order, then any other sender in
order of appearance); each message is an arrow from its sender to each agent it is delivered to
by the runtime's rules (topic subscribers, the queue's consumer), except the sender itself and
the DAQ simulator, which reacts to nothing. Consecutive messages of the same kind collapse into
one arrow ("slice x15"), and a block of arrows repeated back to back into a ``loop`` (the
seed's diagram, ``seeds/fast-processing-workflow.md``, is the model). A call on the monitor's
REST API (upstream's agents) is an arrow to the monitor. Heartbeats, agent logs (by bus or
REST) and rejected events are not drawn; a comment at the end counts them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from agents.registry import AGENT_TYPES, agent_class
from eventstore.envelope import TOPIC, Event
from eventstore.rest import PREFIX as REST

from .redrive import RUNTIME_TYPES, identify, queue_of

NAMES = {"daq_simulator": ("DS", "DAQ Simulator"), "data": ("DA", "Data Agent"),
         "fastmon": ("FM", "FastMon Agent"), "fast_processing": ("FP", "Fast Processing Agent"),
         "worker": ("W", "PanDA Workers"), "processing": ("PA", "Processing Agent")}
PASSIVE = frozenset({"daq_simulator"})  # agents/daq.py: handle() reacts to nothing
MAX_BLOCK = 8  # longest block of arrows looked for when folding repeats into loops
_UNSAFE = re.compile(r"[^\w .:()/@+-]")
NOT_DRAWN = RUNTIME_TYPES | {"rest_heartbeat", "rest_log"}
MONITOR = ("MON", "Monitor (REST)")


@dataclass(frozen=True, slots=True)
class Arrow:
    sender: str  # participant alias
    msg_type: str
    receivers: tuple[str, ...]
    count: int = 1


@dataclass(frozen=True, slots=True)
class Loop:
    times: int
    body: tuple[Arrow | Loop, ...]


def diagram(execution_id: str, events: Sequence[Event]) -> list[str]:
    known, _unknown = identify(events)
    aliases: dict[str, str] = {}
    titles: dict[str, str] = {}
    used: Counter[str] = Counter()
    for name, (agent_type, _ns) in sorted(
            known.items(), key=lambda item: (list(AGENT_TYPES).index(item[1][0]), item[0])):
        short, title = NAMES.get(agent_type, (agent_type.upper()[:2], agent_type))
        used[short] += 1
        aliases[name] = short if used[short] == 1 else f"{short}{used[short]}"
        titles[name] = title
    subscribers: dict[str, list[str]] = {}
    for name, (agent_type, _ns) in known.items():
        if agent_type in PASSIVE:
            continue
        for destination in getattr(agent_class(agent_type), "subscriptions", (TOPIC,)):
            subscribers.setdefault(destination, []).append(name)
    order = {name: index for index, name in enumerate(aliases)}
    skipped: Counter[str] = Counter()
    arrows: list[Arrow] = []
    for event in events:
        if not event.valid or event.msg_type is None:
            skipped["rejected"] += 1
            continue
        if event.msg_type in NOT_DRAWN:
            skipped[event.msg_type] += 1
            continue
        sender = event.sender or "(no sender)"
        if sender not in aliases:
            aliases[sender] = f"X{sum(alias[0] == 'X' for alias in aliases.values()) + 1}"
            titles[sender] = ""
            order[sender] = len(order)
        if event.destination.startswith(REST):
            if MONITOR[0] not in titles:
                aliases[MONITOR[0]], titles[MONITOR[0]] = MONITOR
                order[MONITOR[0]] = len(order)
            arrows.append(Arrow(aliases[sender], event.msg_type, (MONITOR[0],)))
            continue
        targets = sorted((name for name in subscribers.get(queue_of(event.destination), ())
                          if name != sender), key=order.__getitem__)
        arrows.append(Arrow(aliases[sender], event.msg_type,
                            tuple(aliases[name] for name in targets)))
    lines = ["sequenceDiagram"]
    for name, alias in aliases.items():
        title = (titles[name] if name == MONITOR[0] else f"{titles[name]} ({name})"
                 if titles[name] else name)
        lines.append(f"    participant {alias} as {_safe(title)}")
    if aliases:
        first, last = next(iter(aliases.values())), list(aliases.values())[-1]
        span = first if first == last else f"{first},{last}"
        lines.append(f"    Note over {span}: execution {_safe(execution_id)}")
    lines.extend(_render(fold_repeats(collapse(arrows)), 1))
    if skipped:
        lines.append("    %% not drawn: " + ", ".join(
            f"{count} {kind}" for kind, count in sorted(skipped.items())))
    return lines


def collapse(arrows: Iterable[Arrow]) -> list[Arrow]:
    """Consecutive arrows of one kind (sender, type, receivers) -> one arrow with a count."""
    out: list[Arrow] = []
    for arrow in arrows:
        if out and (out[-1].sender, out[-1].msg_type, out[-1].receivers) == (
                arrow.sender, arrow.msg_type, arrow.receivers):
            last = out[-1]
            out[-1] = Arrow(last.sender, last.msg_type, last.receivers, last.count + 1)
        else:
            out.append(arrow)
    return out


def fold_repeats(items: Sequence[Arrow | Loop]) -> list[Arrow | Loop]:
    """Blocks of up to MAX_BLOCK items repeated back to back -> ``Loop`` (greedy, leftmost,
    longest coverage first)."""
    out: list[Arrow | Loop] = []
    i, n = 0, len(items)
    while i < n:
        best_k, best_r = 0, 1
        for k in range(1, min(MAX_BLOCK, (n - i) // 2) + 1):
            block = items[i:i + k]
            r = 1
            while items[i + r * k:i + (r + 1) * k] == block:
                r += 1
            if r > 1 and r * k > best_r * best_k:
                best_k, best_r = k, r
        if best_k:
            out.append(Loop(best_r, tuple(items[i:i + best_k])))
            i += best_k * best_r
        else:
            out.append(items[i])
            i += 1
    return out


def _render(items: Iterable[Arrow | Loop], depth: int) -> Iterator[str]:
    pad = "    " * depth
    for item in items:
        if isinstance(item, Loop):
            yield f"{pad}loop {item.times} times"
            yield from _render(item.body, depth + 1)
            yield f"{pad}end"
            continue
        label = item.msg_type if item.count == 1 else f"{item.msg_type} x{item.count}"
        if not item.receivers:
            yield f"{pad}Note over {item.sender}: {label} (no receiver)"
        for receiver in item.receivers:
            yield f"{pad}{item.sender}->>{receiver}: {label}"


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text)
