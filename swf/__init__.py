"""The application shell: the ``swf`` command line (``swf replay`` is ``swf-replay``),
configuration loading, and the web console.

One job: turn what a user types (flags, environment, config files) into calls of the four
libraries' Python APIs, and render what they return. No decision, fold or SQL lives here.
May import: eventstore, projections, agents, replay.
"""
