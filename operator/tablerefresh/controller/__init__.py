"""The control plane: TableRefresh -> CronJob, status, health. No refresh SQL here.

Pure: ``openapi`` and ``crd`` (the CRD from the models), ``render`` (the CronJob), ``conditions``
and ``outcome`` (status and Events from what a reconcile found), ``status`` (the status models).
Effects: ``kube`` (the API calls), ``reconcile`` (read, render, apply, write status),
``runtime`` (triggers, one reconcile per object at a time, periodic resync), ``handlers``
(kopf wiring), ``settings`` (kopf state in status), ``run`` (scope and start-up), ``metrics``.

Room for the health check and run outcomes: their status blocks and condition types are declared
(``status``, ``conditions.READY_INPUTS``); a periodic check per object iterates ``runtime``'s
store the way ``resync_forever`` does; a Job watch is one more ``kopf.on.event`` in ``handlers``
(Jobs carry ``naming.owned_labels``); each writes its own status fields with
``Kube.apply_status(..., manager=...)`` and recomputes Ready with ``conditions.merge``.
"""
