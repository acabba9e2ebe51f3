"""The retry helper for blocking calls (agents/retry.py)."""

from __future__ import annotations

import threading

import pytest

from agents.retry import RetryPolicy, Transient, retry_call


class Flaky:
    """Fails with ``problem`` the first ``failures`` calls, then answers ``done``."""

    def __init__(self, failures: int, problem: BaseException | None = None) -> None:
        self.failures, self.calls = failures, 0
        self.problem = problem or Transient("down")

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.problem
        return "done"


def test_delays_double_up_to_the_maximum_and_each_retry_is_announced() -> None:
    delays: list[float] = []
    announced: list[tuple[int, float, str]] = []
    call = Flaky(4)
    result = retry_call(call, RetryPolicy(attempts=5, initial=0.25, maximum=0.6),
                        sleep=delays.append,
                        before_retry=lambda n, d, p: announced.append((n, d, str(p))))
    assert (result, call.calls) == ("done", 5)
    assert delays == [0.25, 0.5, 0.6, 0.6]
    assert announced == [(2, 0.25, "down"), (3, 0.5, "down"), (4, 0.6, "down"),
                         (5, 0.6, "down")]


def test_after_the_last_attempt_the_last_failure_is_raised() -> None:
    delays: list[float] = []
    call = Flaky(10)
    with pytest.raises(Transient, match="down"):
        retry_call(call, RetryPolicy(attempts=3, initial=1.0, maximum=8.0), sleep=delays.append)
    assert (call.calls, delays) == (3, [1.0, 2.0])


def test_other_failures_end_the_loop_at_once() -> None:
    call = Flaky(1, ValueError("refused"))
    with pytest.raises(ValueError, match="refused"):
        retry_call(call, RetryPolicy(attempts=5), sleep=pytest.fail)
    assert call.calls == 1
    exiting = Flaky(1, SystemExit(255))  # not even an Exception: never retried, never eaten
    with pytest.raises(SystemExit):
        retry_call(exiting, RetryPolicy(attempts=5), retry_on=Exception, sleep=pytest.fail)


def test_without_a_limit_it_retries_until_stopped() -> None:
    stop = threading.Event()
    call = Flaky(10**6, ConnectionError("database unavailable"))

    def wait(seconds: float) -> None:
        if call.calls == 50:
            stop.set()

    with pytest.raises(ConnectionError):
        retry_call(call, RetryPolicy(attempts=None, initial=0.2, maximum=5.0, jitter=0.2),
                   retry_on=Exception, sleep=wait, stop=stop)
    assert call.calls == 51  # the attempt after the stop was asked for is the last


def test_jitter_only_lengthens_and_long_outages_stay_at_the_maximum() -> None:
    policy = RetryPolicy(attempts=None, initial=0.2, maximum=5.0, jitter=0.2)
    for retry in (1, 2, 10, 5000):
        base = min(5.0, 0.2 * 2 ** (min(retry, 60) - 1))
        assert base <= policy.delay(retry) <= base * 1.2
