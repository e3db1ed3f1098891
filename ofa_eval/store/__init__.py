"""The DuckDB store: its schema, migrations, locks and transactions, and Parquet reading.

- `database`: opening a store (schema versions, migrations in `migrations/`, the lock that
  waits `--lock-timeout`), transactions, and the rows every writer shares (tasks, eval sets);
- `parquet`: reading input tables with one-line errors that name the file;
- `read_only_sql`: the queries `ofa-eval sql` (and `ofa_eval.sql`) run, and those it refuses;
- `schema.sql` and `migrations/<version>.sql`: the public tables and views (docs/store.md).

Its face is lazy: `sql` opens a store without loading polars, which `parquet` needs.
"""

from ofa_eval.common.lazy import lazy_face

__all__ = ["DEFAULT_LOCK_TIMEOUT", "SCHEMA_VERSION", "connected", "ensure_eval_set", "ensure_task", "insert_rows",
           "open_store", "read_parquet", "require_columns", "run_query", "set_lock_timeout", "transaction"]
__getattr__, __dir__ = lazy_face(__name__, {
    "DEFAULT_LOCK_TIMEOUT": "database", "SCHEMA_VERSION": "database", "connected": "database",
    "ensure_eval_set": "database", "ensure_task": "database", "insert_rows": "database", "open_store": "database",
    "set_lock_timeout": "database", "transaction": "database", "read_parquet": "parquet", "require_columns": "parquet", "run_query": "read_only_sql",
})
