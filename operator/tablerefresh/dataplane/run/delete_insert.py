"""DeleteInsert: the slice deleted from the target, then the staged slice inserted. Not atomic:
readers see a gap between the two; for targets whose slice is not whole partitions.
"""

from __future__ import annotations

from tablerefresh.dataplane.infra.failpoints import failpoint
from tablerefresh.dataplane.infra.lock import TableLock
from tablerefresh.dataplane.run import measure, staging
from tablerefresh.dataplane.run.context import RunContext
from tablerefresh.dataplane.run.decide import Frame


def delete_insert(ctx: RunContext, frame: Frame, lock: TableLock) -> None:
    tq = frame.tables.target.qualified
    staging.load(ctx, frame)
    with ctx.step("verify staging"):
        decision = measure.decision(ctx.client, frame, staging.measured(ctx, frame), ctx.clock())
        staging.verify(ctx, frame, decision.facts)
    with ctx.step("delete the slice, then insert it (not atomic: readers see a gap)"):
        lock.assert_held()
        ctx.execute(list(decision.backup))
        delete, insert = decision.swap
        ctx.swap.start(f"the slice of {tq} was deleted, or may have been, and may be missing until a run succeeds")
        ctx.execute([delete])
        failpoint("deleted")
        ctx.execute([insert])
        ctx.swap.now_holds(f"the new slice was inserted into {tq}")
        failpoint("swapped")
    ctx.record.duplicates = measure.duplicates(ctx.client, ctx.spec.unique_key, tq, ctx.in_slice, ctx.params)
    staging.record_after(ctx, tq)
    staging.prune_backups(ctx, ctx.spec.backup.keep)
