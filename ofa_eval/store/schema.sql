-- ofa-eval store, schema version 1. Documented column by column in docs/store.md.
-- Base tables hold facts; the public views (runs, scores, ...) are what users query.

CREATE TABLE store_info (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);

CREATE SEQUENCE run_ids START 1;
CREATE TABLE run_table (
    run_id        BIGINT PRIMARY KEY DEFAULT nextval('run_ids'),
    task          VARCHAR NOT NULL,
    model         VARCHAR NOT NULL,
    learning_rate DOUBLE  NOT NULL,
    batch_size    INTEGER NOT NULL,
    seed          BIGINT  NOT NULL,
    epochs        INTEGER,
    external_id   VARCHAR NOT NULL,
    origin        VARCHAR NOT NULL,          -- 'ofa-xlt' (released results) or 'ingest'
    path          VARCHAR,                   -- run folder for ingested runs
    UNIQUE (task, model, external_id)
);

CREATE SEQUENCE snapshot_ids START 1;
CREATE TABLE snapshot_table (
    snapshot_id    BIGINT PRIMARY KEY DEFAULT nextval('snapshot_ids'),
    run_id         BIGINT NOT NULL REFERENCES run_table (run_id),
    snapshot_index INTEGER NOT NULL,         -- 1..10
    step           BIGINT NOT NULL,
    epoch          DOUBLE,
    weights_path   VARCHAR,                  -- NULL when the weights were not kept
    weights_sha256 VARCHAR,
    weights_bytes  BIGINT,
    UNIQUE (run_id, snapshot_index)
);

-- The weights behind each run variant of an ingested run (LAST and SRC-DEV point at snapshot
-- files, CA at the run's checkpoint average): the members that averaging reads.
CREATE TABLE run_weight_table (
    run_id         BIGINT NOT NULL REFERENCES run_table (run_id),
    variant        VARCHAR NOT NULL,         -- 'last', 'src-dev' or 'ca'
    weights_path   VARCHAR NOT NULL,
    weights_sha256 VARCHAR NOT NULL,
    PRIMARY KEY (run_id, variant)
);

CREATE SEQUENCE eval_set_ids START 1;
CREATE TABLE eval_set_table (
    eval_set_id BIGINT PRIMARY KEY DEFAULT nextval('eval_set_ids'),
    task        VARCHAR NOT NULL,
    dataset     VARCHAR NOT NULL,
    language    VARCHAR NOT NULL,
    split       VARCHAR NOT NULL,            -- 'validation' or 'test'
    role        VARCHAR NOT NULL,            -- 'source', 'target' or 'extra' (scored, not averaged)
    n_examples  INTEGER,
    UNIQUE (task, dataset, language, split)
);

CREATE TABLE task_table (
    task   VARCHAR PRIMARY KEY,
    metric VARCHAR NOT NULL                  -- the metric the protocol averages ('accuracy', 'f1')
);

CREATE SEQUENCE average_ids START 1;
CREATE TABLE average_table (
    average_id BIGINT PRIMARY KEY DEFAULT nextval('average_ids'),
    task       VARCHAR NOT NULL,
    model      VARCHAR NOT NULL,
    recipe     VARCHAR NOT NULL,             -- 'last', 'src-dev', 'ca', 'soup-top5', ...
    approach   VARCHAR NOT NULL DEFAULT 'all',
    member_key VARCHAR NOT NULL,             -- content key of the member set (order-free)
    n_members  INTEGER NOT NULL,
    weights_path VARCHAR,
    UNIQUE (task, model, recipe, approach, member_key)
);

CREATE TABLE average_member_table (
    average_id  BIGINT NOT NULL REFERENCES average_table (average_id),
    position    INTEGER NOT NULL,            -- 1-based order in which members were averaged in
    run_id      BIGINT NOT NULL REFERENCES run_table (run_id),
    snapshot_id BIGINT REFERENCES snapshot_table (snapshot_id),
    weight      DOUBLE NOT NULL,
    PRIMARY KEY (average_id, position)
);

CREATE TABLE score_table (
    run_id      BIGINT REFERENCES run_table (run_id),
    variant     VARCHAR,                     -- with run_id: 'last', 'src-dev', 'ca', 'trg-dev'
    snapshot_id BIGINT REFERENCES snapshot_table (snapshot_id),
    average_id  BIGINT REFERENCES average_table (average_id),
    eval_set_id BIGINT NOT NULL REFERENCES eval_set_table (eval_set_id),
    metric      VARCHAR NOT NULL,
    value       DOUBLE NOT NULL,             -- percent
    CHECK ((run_id IS NOT NULL AND variant IS NOT NULL AND snapshot_id IS NULL AND average_id IS NULL)
        OR (run_id IS NULL AND variant IS NULL AND snapshot_id IS NOT NULL AND average_id IS NULL)
        OR (run_id IS NULL AND variant IS NULL AND snapshot_id IS NULL AND average_id IS NOT NULL))
);

CREATE TABLE selection_table (
    run_id    BIGINT NOT NULL REFERENCES run_table (run_id),
    variant   VARCHAR NOT NULL,
    criterion VARCHAR NOT NULL,              -- 'source-dev' or 'target-dev'
    value     DOUBLE NOT NULL,               -- percent
    PRIMARY KEY (run_id, variant, criterion)
);

CREATE TABLE draw_table (
    task     VARCHAR NOT NULL,
    model    VARCHAR NOT NULL,
    draw     VARCHAR NOT NULL,               -- the draw's label, e.g. the release's sampling seed
    recipe   VARCHAR NOT NULL DEFAULT '*',   -- '*': every strategy; else this averaging recipe only
    position INTEGER NOT NULL,               -- 1-based: the first r positions are the draw at r
    run_id   BIGINT NOT NULL REFERENCES run_table (run_id),
    PRIMARY KEY (task, model, draw, recipe, position)
);

CREATE SEQUENCE result_ids START 1;
CREATE TABLE protocol_result_table (
    result_id  BIGINT NOT NULL DEFAULT nextval('result_ids'),
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    task       VARCHAR NOT NULL,
    model      VARCHAR NOT NULL,
    strategy   VARCHAR NOT NULL,
    variant    VARCHAR NOT NULL,
    runs       INTEGER NOT NULL,
    mean       DOUBLE NOT NULL,
    std        DOUBLE,
    draws      BIGINT NOT NULL,             -- draws averaged over (with --exact: every possible draw)
    ci_low     DOUBLE,                       -- with --ci: bootstrap interval of the mean over draws
    ci_high    DOUBLE,
    settings   VARCHAR NOT NULL              -- JSON: draw source, seed, excluded draws, soup k, ...
);

CREATE SEQUENCE analysis_ids START 1;
CREATE TABLE analysis_result_table (
    result_id  BIGINT NOT NULL DEFAULT nextval('analysis_ids'),
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    analysis   VARCHAR NOT NULL,             -- 'tracking', 'regret', 'languages', 'source_ranking'
    task       VARCHAR NOT NULL,
    model      VARCHAR NOT NULL,
    row        VARCHAR NOT NULL,             -- JSON: one result row as printed
    settings   VARCHAR NOT NULL              -- JSON: draws, seeds, resamples, confidence level
);

CREATE VIEW runs AS
SELECT run_id, task, model, learning_rate, batch_size, seed, epochs, external_id, origin, path
FROM run_table;

CREATE VIEW snapshots AS
SELECT s.*, r.task, r.model FROM snapshot_table s JOIN run_table r USING (run_id);

CREATE VIEW eval_sets AS SELECT * FROM eval_set_table;

CREATE VIEW run_weights AS
SELECT w.*, r.task, r.model FROM run_weight_table w JOIN run_table r USING (run_id);

CREATE VIEW scores AS
SELECT
    CASE WHEN sc.run_id IS NOT NULL THEN 'run'
         WHEN sc.snapshot_id IS NOT NULL THEN 'snapshot'
         ELSE 'average' END AS scored,
    coalesce(sc.run_id, sn.run_id) AS run_id,
    sc.variant, sc.snapshot_id, sn.snapshot_index, sc.average_id,
    e.task, coalesce(r.model, rs.model, a.model) AS model,
    e.dataset, e.language, e.split, e.role, sc.metric, sc.value
FROM score_table sc
JOIN eval_set_table e USING (eval_set_id)
LEFT JOIN run_table r ON r.run_id = sc.run_id
LEFT JOIN snapshot_table sn ON sn.snapshot_id = sc.snapshot_id
LEFT JOIN run_table rs ON rs.run_id = sn.run_id
LEFT JOIN average_table a ON a.average_id = sc.average_id;

CREATE VIEW selection_scores AS
SELECT s.run_id, r.task, r.model, s.variant, s.criterion, s.value
FROM selection_table s JOIN run_table r USING (run_id);

CREATE VIEW averaged_models AS
SELECT a.average_id, a.task, a.model, a.recipe, a.approach, a.n_members, a.member_key,
       a.weights_path, list(m.run_id ORDER BY m.position) AS member_run_ids
FROM average_table a JOIN average_member_table m USING (average_id)
GROUP BY ALL;

CREATE VIEW draws AS SELECT * FROM draw_table;

CREATE VIEW protocol_results AS SELECT * FROM protocol_result_table;

CREATE VIEW analysis_results AS SELECT * FROM analysis_result_table;

-- Per run and variant: the number each selection strategy ranks by and the protocol's score
-- (the unweighted mean over the task's target-language test sets, in the task's metric).
CREATE VIEW run_variants AS
SELECT r.run_id, r.task, r.model, r.learning_rate, r.batch_size, r.seed, sc.variant,
       avg(sc.value) AS target_test, count(*) AS n_target_sets
FROM score_table sc
JOIN run_table r USING (run_id)
JOIN eval_set_table e USING (eval_set_id)
JOIN task_table t ON t.task = e.task AND t.metric = sc.metric
WHERE e.role = 'target' AND e.split = 'test'
GROUP BY ALL;

CREATE VIEW average_scores AS
SELECT a.average_id, a.task, a.model, a.recipe, a.approach, a.member_key, a.n_members,
       avg(sc.value) AS target_test, count(*) AS n_target_sets
FROM score_table sc
JOIN average_table a USING (average_id)
JOIN eval_set_table e USING (eval_set_id)
JOIN task_table t ON t.task = e.task AND t.metric = sc.metric
WHERE e.role = 'target' AND e.split = 'test'
GROUP BY ALL;
