"""The policy: pure functions from what the controller observed to what should be.

No API calls, no clock, no threads: each function takes plain data (the object, the Jobs, a health
report, "now") and returns plain data, so every branch is a unit test.

- ``status``: every condition type, Ready, who writes which status fields, and the one rule of a
  status write (when lastTransitionTime moves, whether to write, which Events to post).
- ``cronjob``: names and labels, the CronJob a TableRefresh renders to, and the reconciler's
  conditions and fields.
- ``checks``: what a health check checks, and its result -> ``status.health`` and conditions.
- ``jobs``: the Job run-now starts, and ended Jobs -> ``status.lastRun``, ``LastRunSucceeded``,
  ``status.active``.
- ``owners``: which TableRefresh owns a CronJob or a Job, and whether an object is being deleted.
"""
