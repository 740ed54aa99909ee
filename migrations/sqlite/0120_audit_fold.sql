-- The identity as policy saw it, so a decision can be replayed later, and the
-- folding of repeated grants into one row.
--   subject  : the identity's subject; NULL when no identity was established
--   groups   : JSON array of its group names as policy saw them, sorted
--   snapshot : 1 when subject, kind and groups were recorded (replayable);
--              0 for rows of an older berth and refused sign-ins
--   repeats  : decisions this row stands for (1, or more once repeats folded in)
--   last_at  : unix seconds of the last folded repeat; NULL when none
ALTER TABLE audit_log ADD COLUMN subject TEXT NULL;
ALTER TABLE audit_log ADD COLUMN groups TEXT NULL;
ALTER TABLE audit_log ADD COLUMN snapshot INTEGER NOT NULL DEFAULT 0;
ALTER TABLE audit_log ADD COLUMN repeats INTEGER NOT NULL DEFAULT 1;
ALTER TABLE audit_log ADD COLUMN last_at INTEGER NULL;
