"""Agents: the decision functions and everything that runs them.

One job: make the workflow's decisions (DAQ simulator, data, FastMon, fast processing, worker
pool, processing agent) as deterministic functions of the events they consume, and host them:
embedded (one process, simulated clock), live (one agent per process on a broker) and the
recorder; transports (in-process bus, STOMP), adapters for the outside world (files, payload,
DDM, batch) and the workflow configuration. May import: eventstore, projections.
"""
