-- One row per fill side; a fill_id can repeat when backfills overlap (the refresh deduplicates).
-- Sorted by condition first: the refresh reads only the conditions in its slice, so whole
-- granules of long-resolved markets are skipped after the condition_id PREWHERE.
CREATE TABLE IF NOT EXISTS pm_canonical_fills_v4
(
    fill_id       String,
    tx_hash       String,
    event_time    DateTime,
    wallet        String,
    condition_id  String,
    outcome_index UInt8,
    tokens_delta  Float64,
    usdc_delta    Float64,
    source        LowCardinality(String),
    is_self_fill  UInt8,
    is_maker      UInt8
)
ENGINE = MergeTree
ORDER BY (condition_id, wallet, outcome_index, event_time)
