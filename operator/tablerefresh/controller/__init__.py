"""The control plane: TableRefresh -> CronJob, status, health. No refresh SQL here.

Three layers, each a folder or a module, each importing only the ones above it in this list:

- ``policy/`` (pure: plain data in, plain data out; no API calls, no clock, no threads; the import
  contract in pyproject.toml holds it to that)
  - ``status``: every condition type, Ready, who writes which status fields, and the one rule of a
    status write: when lastTransitionTime moves, whether to write, which Events to post.
  - ``cronjob``: names and labels, the CronJob a TableRefresh renders to, the reconciler's conditions
    and fields, a schedule's period.
  - ``checks``: what a health check checks; its result -> ``status.health`` and conditions.
  - ``jobs``: the Job run-now starts; ended Jobs -> ``status.lastRun``, ``LastRunSucceeded``, ``status.active``.
  - ``view_runs``: a refreshable view's last refresh -> the same fields and ``LastRunSucceeded``
    (strategy RefreshableView; not wired into the runtime yet).
  - ``owners``: which TableRefresh owns a CronJob or a Job (``owner_of``), and ``being_deleted``.
- ``kube`` (the Kubernetes client): every API call the controller makes, behind ``Kube``.
- ``clock``: the one clock, made at start-up and passed down; policy is handed "now" instead.
- ``runtime/`` (kopf wiring, scheduling, the per-object workers)
  - ``startup``: start the operator from its ``options`` (the watched namespaces: ``scope``), with
    kopf's ``handlers`` and ``settings`` (its diff base kept as a digest: ``diffbase``) and the log
    routing of ``logs``.
  - ``controller``: one record per object, created on first sight and dropped in one place, and the
    triggers that set its workers going.
  - ``workers``: reconcile, a health check (``Prober``), recording runs, run now; each top-down.
  - ``status_writer``: the only status write; reconcile, health check, Job watch and run-now all use it.
  - ``scheduler``: when health checks run, and how many at once.
  - ``metrics``: the Prometheus series, set from the status.

Beside them, ``crd``: the status models and the CRD generated from the models (``tablerefresh crd``).

Who sets Ready? Every source, through ``runtime.status_writer``, by ``policy.status.summarize_ready``.
When is an Event posted? When a status write changes a condition: ``policy.status.condition_events``.
What happens when a Job ends? ``runtime.controller.Controller.job_changed`` -> ``runtime.workers.record_runs``
-> ``policy.jobs.runs_update``.
"""
