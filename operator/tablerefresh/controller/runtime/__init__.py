"""The runtime: kopf wiring, scheduling, and the per-object workers.

- ``startup``: starting the operator: the API client, the clock, the controller, then kopf.
- ``options`` and ``scope``: what the command line sets, and the namespaces to watch.
- ``handlers``: which kopf event calls which controller method.
- ``settings`` and ``diffbase``: kopf's settings, and its diff base kept as a digest.
- ``logs``: what is logged at INFO, and the client libraries' chatter at debug.
- ``controller``: one :class:`~.controller.Record` per object, and the triggers that set its workers
  going (watch events, the resync, the Job watch, run-now, the health scheduler).
- ``workers``: what is done for one object, top-down: reconcile, a health check, recording runs, run now.
- ``status_writer``: the one way any of them writes the status.
- ``scheduler``: when health checks run, and how many at once.
- ``metrics``: the Prometheus series, set from the status.
"""
