"""The session layers, outermost first, and what creates them.

``monitored`` (``MonitoredSession``, ``SingularMonitoredSession``) stacks
``recoverable`` (re-creates the session on ``AbortedError`` /
``UnavailableError``), ``coordinated`` (the Coordinator's threads), ``hooked``
(the hooks around each run) over a raw backend session, each a ``wrapped``
layer. ``creator`` and ``manager`` make and prepare raw sessions from a
``scaffold``; ``training`` is ``MonitoredTrainingSession``; ``step_context``
and ``run_options`` are what ``run_step_fn`` and ``run`` take.
"""
