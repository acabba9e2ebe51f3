"""The one retry helper for blocking calls, on tenacity.

A call that blocks its thread until it succeeds or gives up (an adapter's request to Rucio or
PanDA, the recorder's append during a database outage) goes through ``retry_call``: bounded
exponential backoff, a sleep the caller chooses (tests pass ``delays.append``; the recorder an
interruptible ``Event.wait``), a hook before each retry, and an optional stop event. Reconnects in
an event loop use ``Backoff`` (agents/transport/broker.py) instead: they never give up.

What is worth another try is the caller's decision: the attempt raises ``Transient`` (or a type
the caller names in ``retry_on``) for such a failure; whatever else it returns or raises ends the
loop at once. So an attempt can look at what the server already did before it tries again.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    stop_when_event_set,
)
from tenacity.stop import stop_base

T = TypeVar("T")
_MAX_DOUBLINGS = 60  # beyond this the delay is the maximum anyway (and 2**n overflows floats)


class Transient(Exception):
    """A failure worth another try; its message says what happened (one line, no secret)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` tries in all (None: until stopped), waiting ``initial`` seconds after the first
    failure, twice as long after each next one, at most ``maximum``, plus up to ``jitter`` (a
    fraction of the delay) at random so that many clients do not retry in lockstep."""

    attempts: int | None = 3
    initial: float = 0.5
    maximum: float = 8.0
    jitter: float = 0.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1: after the first failure)."""
        base = min(self.maximum, self.initial * 2 ** min(retry - 1, _MAX_DOUBLINGS))
        if not self.jitter:
            return base
        return base * (1.0 + random.random() * self.jitter)  # noqa: S311 - not crypto


def retry_call(attempt: Callable[[], T], policy: RetryPolicy, *,
               retry_on: type[BaseException] | tuple[type[BaseException], ...] = Transient,
               sleep: Callable[[float], object] = time.sleep,
               stop: threading.Event | None = None,
               before_retry: Callable[[int, float, BaseException], object] | None = None) -> T:
    """``attempt()`` until it returns, raises something other than ``retry_on``, has been tried
    ``policy.attempts`` times, or ``stop`` is set; then its result, or its last exception.

    ``before_retry(number, delay, problem)`` runs before each wait: ``number`` is the attempt
    about to be made (2 for the first retry), ``problem`` the failure that caused it."""
    ends: stop_base = stop_never if policy.attempts is None \
        else stop_after_attempt(max(1, policy.attempts))
    if stop is not None:
        ends = ends | stop_when_event_set(stop)

    def wait(state: RetryCallState) -> float:
        return policy.delay(state.attempt_number)

    def announce(state: RetryCallState) -> None:
        if before_retry is not None and state.outcome is not None and state.next_action:
            problem = state.outcome.exception()
            assert problem is not None  # only failures are retried
            before_retry(state.attempt_number + 1, state.next_action.sleep, problem)

    def pause(seconds: float) -> None:
        sleep(seconds)

    retrying = Retrying(stop=ends, wait=wait, retry=retry_if_exception_type(retry_on),
                        sleep=pause, before_sleep=announce, reraise=True)
    return retrying(attempt)


__all__ = ["RetryPolicy", "Transient", "retry_call"]
