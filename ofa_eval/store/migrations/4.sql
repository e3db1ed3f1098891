-- Schema version 4: target scores that are the same to the last bit on every query.
-- A plain avg() over a run's target-language test scores adds them in whatever order DuckDB's
-- threads combine partial sums, so the mean could differ in its last bit from one query to the
-- next; BCa intervals, which count resampled means below the estimate, then moved in the fourth
-- decimal. Averaging in a fixed order (by evaluation set) makes every query agree.

DROP VIEW run_variants;
CREATE VIEW run_variants AS
SELECT r.run_id, r.task, r.model, r.learning_rate, r.batch_size, r.seed, sc.variant,
       avg(sc.value ORDER BY sc.eval_set_id) AS target_test, count(*) AS n_target_sets
FROM score_table sc
JOIN run_table r USING (run_id)
JOIN eval_set_table e USING (eval_set_id)
JOIN task_table t ON t.task = e.task AND t.metric = sc.metric
WHERE e.role = 'target' AND e.split = 'test'
GROUP BY ALL;

DROP VIEW average_scores;
CREATE VIEW average_scores AS
SELECT a.average_id, a.task, a.model, a.recipe, a.approach, a.member_key, a.n_members,
       avg(sc.value ORDER BY sc.eval_set_id) AS target_test, count(*) AS n_target_sets
FROM score_table sc
JOIN average_table a USING (average_id)
JOIN eval_set_table e USING (eval_set_id)
JOIN task_table t ON t.task = e.task AND t.metric = sc.metric
WHERE e.role = 'target' AND e.split = 'test'
GROUP BY ALL;
