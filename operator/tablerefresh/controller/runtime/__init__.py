"""The runtime: kopf wiring, scheduling, and the per-object workers.

- ``wiring``: kopf's handlers and settings, the namespaces to watch, start-up.
- ``controller``: one :class:`~.controller.Record` per object, and the triggers that set its workers
  going (watch events, the resync, the Job watch, run-now, the health scheduler).
- ``workers``: what is done for one object, top-down: reconcile, a health check, recording runs, run now.
- ``status_writer``: the one way any of them writes the status.
- ``scheduler``: when health checks run, and how many at once.
- ``metrics``: the Prometheus series, set from the status.
"""
