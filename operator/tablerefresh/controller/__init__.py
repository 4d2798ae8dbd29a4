"""The control plane: TableRefresh -> CronJob, status, health. No refresh SQL here.

Pure: ``openapi`` and ``crd`` (the CRD from the models), ``render`` (the CronJob), ``conditions``
and ``outcome`` (status and Events from what a reconcile found), ``status`` (the status models),
``healthcheck`` and ``judge`` (what to check, a result -> status.health and conditions), ``jobs`` (a
Job and its Pods -> status.lastRun), ``transitions`` (Events once per condition transition),
``samples`` (metric values from the status).
Effects: ``kube`` (the API calls), ``reconcile`` (read, render, apply, write status),
``runtime`` (triggers, one writer per object at a time, periodic resync), ``handlers`` (kopf
wiring), ``settings`` (kopf state in status), ``run`` (scope and start-up), ``metrics``,
``scheduler`` and ``probe`` (when health checks run, and one run), ``recorder`` (the Job watch),
``writer`` and ``written`` (a status writer's apply under its own field manager, and what every
writer last applied, so Ready is always computed from the newest conditions), ``runnow``.
"""
