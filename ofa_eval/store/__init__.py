"""The DuckDB store: its schema, migrations, locks and transactions, and Parquet reading.

- `database`: opening a store (schema versions, migrations in `migrations/`, the lock that
  waits `--lock-timeout`), transactions, and the rows every writer shares (tasks, eval sets);
- `parquet`: reading input tables with one-line errors that name the file;
- `read_only_sql`: the queries `ofa-eval sql` (and `ofa_eval.sql`) run, and those it refuses;
- `schema.sql` and `migrations/<version>.sql`: the public tables and views (docs/store.md).
"""

from ofa_eval.store.database import (DEFAULT_LOCK_TIMEOUT, SCHEMA_VERSION, connected, ensure_eval_set, ensure_task,
                                     open_store, set_lock_timeout, transaction)
from ofa_eval.store.parquet import read_parquet, require_columns
from ofa_eval.store.read_only_sql import run_query

__all__ = ["DEFAULT_LOCK_TIMEOUT", "SCHEMA_VERSION", "connected", "ensure_eval_set", "ensure_task", "open_store",
           "read_parquet", "require_columns", "run_query", "set_lock_timeout", "transaction"]
