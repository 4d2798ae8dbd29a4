-- Unresolved rows live in partition 0 and each month of resolutions in its own partition, so a
-- refresh swaps whole partitions atomically. The key is the unique key of a row.
-- allow_nullable_key: the partition expression is typed Nullable because resolved_at is, even
-- though it never yields NULL.
CREATE TABLE IF NOT EXISTS pm_trade_fifo_roi_v3_mat_unified
(
    tx_hash           String,
    wallet            String,
    condition_id      String,
    outcome_index     UInt8,
    entry_time        DateTime,
    resolved_at       Nullable(DateTime),
    tokens            Float64,
    cost_usd          Float64,
    tokens_sold_early Float64,
    tokens_held       Float64,
    exit_value        Float64,
    pnl_usd           Float64,
    roi               Float64,
    pct_sold_early    Float64,
    is_maker          UInt8,
    is_closed         UInt8,
    is_short          UInt8
)
ENGINE = MergeTree
PARTITION BY if(resolved_at IS NULL, 0, toYYYYMM(resolved_at))
ORDER BY (wallet, condition_id, outcome_index, tx_hash)
SETTINGS allow_nullable_key = 1
