"""The data plane: refresh a ClickHouse table slice. No Kubernetes imports here.

- ``run/``: the run pipeline, read top to bottom in ``run/refresh.py``: check the inputs, lock,
  measure, :func:`run.decide.decide`, carry over, verify, swap, record. ``tablerefresh plan`` makes
  the same measurements and the same decision without changing anything.
- ``operations/``: the other commands that work on a target (dedupe, backups and restore, the
  sampled ``verify``), each holding the target's lock as a run does.
- ``view/``: a refreshable materialized view the server runs on a schedule (strategy
  RefreshableView, not yet accepted by the CRD): its statements, and its state in
  ``system.view_refreshes`` read as runs.
- ``infra/``: what they stand on: the connection and the embedded engine, SQL text and its guard,
  table names, the catalog, the lock, errors, the clock.
- ``server/``: the embedded engine served over ClickHouse's own interfaces.
- ``health.py`` and ``report.py``: the health query the controller runs, and its report.
"""
