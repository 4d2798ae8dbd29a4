-- Every resolution event as reported, including superseded, soft-deleted and empty-payout rows:
-- the refresh picks the effective one (latest valid), so nothing is collapsed at rest.
CREATE TABLE IF NOT EXISTS pm_condition_resolutions
(
    condition_id      String,
    payout_numerators String,
    resolved_at       DateTime,
    is_deleted        UInt8
)
ENGINE = MergeTree
ORDER BY (condition_id, resolved_at)
