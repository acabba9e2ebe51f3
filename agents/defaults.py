"""Defaults the deployment settings (swf/settings.py) share with the agents that use them.

A module of plain constants, importing nothing: every ``swf`` command reads the settings, and
taking these from ``recorder`` and ``config`` made even ``swf query`` import the STOMP consumer,
tenacity and the workflow loader (about 15 ms of its start-up).
"""

DEFAULT_USER = "swf"  # who an execution is recorded as unless told (`[agent] user`)

# The broker recorder (agents/recorder.py, `[recorder]` settings)
RECORDER_NAME = "swf-recorder"  # client-id and durable subscription prefix
BATCH_SIZE = 500
BATCH_WAIT = 0.02  # seconds a batch waits for more messages after its first
PREFETCH = 5000  # unacked messages per subscription the broker may push ahead
