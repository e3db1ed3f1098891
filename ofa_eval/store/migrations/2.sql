-- Schema version 2: per-example sufficient statistics, for the joint draws x examples bootstrap.
-- One row per subject (a run variant or an averaged model), target-language test set and
-- statistic; `values` holds one number per example, in example_id order. Stores made by
-- version 1 simply have none for the runs they already hold.

CREATE TABLE example_stat_table (
    run_id          BIGINT REFERENCES run_table (run_id),
    variant         VARCHAR,                 -- with run_id: 'last', 'src-dev', 'ca', 'trg-dev'
    average_id      BIGINT REFERENCES average_table (average_id),
    eval_set_id     BIGINT NOT NULL REFERENCES eval_set_table (eval_set_id),
    statistic       VARCHAR NOT NULL,        -- 'correct' (NLI), 'f1'/'exact_match' (QA), 'tp'/'n_pred'/'n_gold' (NER)
    examples_sha256 VARCHAR NOT NULL,        -- hash of the ordered example ids the values belong to
    "values"        DOUBLE[] NOT NULL,
    CHECK ((run_id IS NOT NULL AND variant IS NOT NULL AND average_id IS NULL)
        OR (run_id IS NULL AND variant IS NULL AND average_id IS NOT NULL))
);

CREATE VIEW example_stats AS
SELECT CASE WHEN x.run_id IS NOT NULL THEN 'run' ELSE 'average' END AS scored,
       x.run_id, x.variant, x.average_id, e.task, coalesce(r.model, a.model) AS model,
       e.dataset, e.language, e.split, x.statistic, len(x."values") AS n_examples,
       x.examples_sha256, x."values"
FROM example_stat_table x
JOIN eval_set_table e USING (eval_set_id)
LEFT JOIN run_table r ON r.run_id = x.run_id
LEFT JOIN average_table a ON a.average_id = x.average_id;
