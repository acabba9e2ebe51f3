"""Upstream's clients of the monitor, for tests: ``requests`` sessions as BaseAgent and the REST
log handler hold them (swf-common-lib base_agent.py:183-190, rest_logging.py:18-24), playing
a ``replay.upstream_rest`` exchange against a running ``swf serve``.

    client = UpstreamClient(served.base_url, TOKEN)
    steps = play(fast_processing_exchange(), client, send)   # send: the bus side, or ignore
    client.answers        # every (call, answer), retries and lost answers included
"""

from __future__ import annotations

from typing import Any

import requests

from replay.upstream_rest import Answer, Call


class UpstreamClient:
    """BaseAgent's session (``Authorization: Token``, as its calls send it) and the log
    handler's own session (no auth)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.api = requests.Session()
        self.api.headers.update({"Authorization": f"Token {token}"})
        self.logs = requests.Session()
        self.answers: list[tuple[Call, Answer]] = []

    def __call__(self, step: Call) -> Answer:
        session = self.api if step.token else self.logs
        headers = {"Content-Type": "application/json"} if step.body is not None else {}
        response = session.request(step.method, self.base_url + step.path, data=step.body,
                                   headers=headers, timeout=10, allow_redirects=False)
        body: Any
        try:
            body = response.json()
        except ValueError:
            body = response.text
        answer = Answer(response.status_code, body)
        self.answers.append((step, answer))
        return answer

    def close(self) -> None:
        self.api.close()
        self.logs.close()
