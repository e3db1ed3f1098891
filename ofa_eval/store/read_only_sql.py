"""`ofa-eval sql`: read-only queries over the store.

Two guards. The store is opened read-only (DuckDB opens the file for reading only), so nothing
a query does can change its bytes. And before anything runs, DuckDB's own parser splits the
query into statements, and only statements that read run: SELECT (with DESCRIBE, SHOW,
SUMMARIZE, FROM-first queries and `read_csv`/`read_parquet` of local files: reading is
analysis), PIVOT, and EXPLAIN of such a statement. Everything else is refused with one line
naming it, before any statement runs: statements that would write the store (INSERT, CREATE,
CHECKPOINT, ...), change the session (SET, PRAGMA, ATTACH, ...) or write files (`COPY ... TO`,
`EXPORT DATABASE`, `EXPLAIN ANALYZE COPY ...`): `sql` writes only to standard output, so a
typo can never overwrite the store or another file; redirect `--format csv` or `json` to export.
"""

from __future__ import annotations

import re

import duckdb

from ofa_eval.common.errors import OfaError

READING = {duckdb.StatementType.SELECT, duckdb.StatementType.MULTI}  # MULTI: PIVOT
FILE_WRITING = {duckdb.StatementType.COPY, duckdb.StatementType.EXPORT}
_EXPLAIN_ANALYZE = re.compile(r"^\s*EXPLAIN\s+ANALY[SZ]E\b", re.IGNORECASE)
_EXPLAIN = re.compile(r"^\s*EXPLAIN(\s+ANALY[SZ]E)?\b", re.IGNORECASE)


def refusal(con, query: str) -> str | None:
    """Why `query` may not run in `sql` (one line), or None when every statement only reads."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as error:
        raise OfaError(f"query failed: {str(error).splitlines()[0]}") from None
    for statement in statements:
        text = statement.query.strip()
        if statement.type == duckdb.StatementType.EXPLAIN:
            if not _EXPLAIN_ANALYZE.match(text):
                continue  # plain EXPLAIN plans a statement without running it
            inner = refusal(con, _EXPLAIN.sub("", text, count=1))
            if inner:
                return inner
            continue
        if statement.type in READING:
            continue
        word = text.split(None, 1)[0].upper() if text else str(statement.type).split(".")[-1]
        if statement.type in FILE_WRITING:
            return (f"sql is read-only and writes no files: {word} is refused "
                    "(print with --format csv or json and redirect the output to a file)")
        return f"sql is read-only: {word} is refused (only SELECT, PIVOT and EXPLAIN run)"
    return None


def run_query(con, query: str) -> tuple[list[str], list[dict]] | None:
    """The columns and rows of a read-only query (None for a statement without a result)."""
    if not query.strip():
        raise OfaError("the query is empty")
    reason = refusal(con, query)
    if reason:
        raise OfaError(reason)
    try:
        cursor = con.execute(query)
    except duckdb.Error as error:
        raise OfaError(f"query failed: {str(error).splitlines()[0]}") from None
    if cursor.description is None:
        return None
    columns = [d[0] for d in cursor.description]
    return columns, [dict(zip(columns, values)) for values in cursor.fetchall()]
