-- The learner-activity export reads an organisation's learner-days in
-- (day, user_id, lesson_id) order. With only (organisation_id, day) the
-- planner sorted a million joined rows on disk (work_mem) before the first
-- row left; with the order in the index the rows stream as they are read.
-- It replaces (organisation_id, day), of which it is a prefix (the reports'
-- day ranges read it the same way), so the folds still maintain one index;
-- none of its columns change on update, so rollup updates stay HOT.
CREATE INDEX rollup_learner_daily_org_order
    ON rollup_learner_daily (organisation_id, day, user_id, lesson_id);
DROP INDEX rollup_learner_daily_org;
